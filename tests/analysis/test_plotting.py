"""mmbert.analysis.plotting: what each helper draws."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from mmbert.analysis import mark_phases, plot_curves, plot_heatmap, plot_shares, run_colors


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def test_run_colors_follow_recipe_order():
    colors = run_colors(["merges/ties", "decay-all", "pretrain"])
    assert list(colors) == ["pretrain", "decay-all", "merges/ties"]
    assert len(set(colors.values())) == 3


def test_plot_curves_one_line_per_run_and_phase_marks(ax):
    table = pd.DataFrame(
        {
            "run": ["midtrain", "midtrain", "pretrain", "pretrain"],
            "cum_tokens": [30.0, 20.0, 0.0, 10.0],
            "value": [1.0, 2.0, 4.0, 3.0],
        }
    )
    plot_curves(ax, table, starts={"midtrain": 15.0}, logy=True)
    lines = [line for line in ax.get_lines() if line.get_label() in ("pretrain", "midtrain")]
    assert [line.get_label() for line in lines] == ["pretrain", "midtrain"]
    np.testing.assert_array_equal(lines[1].get_xdata(), [20.0, 30.0])  # sorted along x
    vertical = [line for line in ax.get_lines() if line not in lines]
    assert len(vertical) == 1 and list(vertical[0].get_xdata()) == [15.0, 15.0]
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.texts] == ["midtrain"]


def test_plot_curves_keeps_given_colors(ax):
    colors = run_colors(["eng_Latn", "fra_Latn", "rus_Cyrl"])
    table = pd.DataFrame({"language": ["rus_Cyrl"], "cum_tokens": [1.0], "value": [2.0]})
    plot_curves(ax, table, hue="language", colors=colors, xlabel="tokens")
    assert ax.get_lines()[0].get_color() == colors["rus_Cyrl"]
    assert ax.get_xlabel() == "tokens"


def test_mark_phases(ax):
    mark_phases(ax, {"midtrain": 1.0, "decay": 2.0})
    assert [line.get_xdata()[0] for line in ax.get_lines()] == [1.0, 2.0]


def test_plot_heatmap_shows_the_matrix_and_highlights(ax):
    matrix = pd.DataFrame([[1.0, 2.0], [3.0, np.nan]], index=["a", "b"], columns=["eng_Latn", "fao_Latn"])
    plot_heatmap(ax, matrix, fmt=".1f", highlight=["fao_Latn"])
    np.testing.assert_array_equal(ax.images[0].get_array().filled(np.nan), matrix.to_numpy())
    assert sorted(t.get_text() for t in ax.texts) == ["1.0", "2.0", "3.0"]  # no label on NaN
    labels = {t.get_text(): t for t in ax.get_xticklabels()}
    assert labels["fao_Latn"].get_fontweight() == "bold"
    assert labels["eng_Latn"].get_fontweight() != "bold"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]


def test_plot_heatmap_annotates_only_small_tables(ax):
    plot_heatmap(ax, pd.DataFrame(np.zeros((20, 20))))
    assert len(ax.texts) == 0
    plot_heatmap(ax, pd.DataFrame(np.zeros((20, 20))), annotate=True)
    assert len(ax.texts) == 400


def test_plot_shares_log_scale(ax):
    shares = pd.DataFrame(
        {
            "run": ["midtrain"] * 2,
            "language": ["fra_Latn", "eng_Latn"],
            "tau": [0.5, 0.5],
            "natural": [0.1, 0.9],
            "target": [0.25, 0.75],
            "realised": [0.2, 0.8],
        }
    )
    plot_shares(ax, shares, "midtrain")
    assert ax.get_yscale() == "log"
    assert [line.get_label() for line in ax.get_lines()] == ["natural", "target", "realised"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["eng_Latn", "fra_Latn"]
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), [0.75, 0.25])
    assert "tau=0.5" in ax.get_title()
    with pytest.raises(KeyError):
        plot_shares(ax, shares, "decay-all")
