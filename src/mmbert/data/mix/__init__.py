"""Mixes: which languages a phase trains on, where their documents are, and how many tokens each has.

One module per backend, each with its mix spec and its source (the documents of one language):

- :mod:`~mmbert.data.mix.sample`: :class:`SampleMix`, the embedded sample corpus ``data/sample``;
- :mod:`~mmbert.data.mix.folder`: :class:`FolderMix` and :class:`FileSource`, a local FineWeb2-layout folder
  (found by :mod:`~mmbert.data.mix.layout`);
- :mod:`~mmbert.data.mix.hub`: :class:`HubMix` and :class:`HubSource`, the released mixtures over hub datasets;
- :mod:`~mmbert.data.mix.mds`: :class:`MdsMix` and :class:`MdsSource`, pre-tokenized MDS shards;
- :mod:`~mmbert.data.mix.added`: :class:`AddedMix`, any mix with your own languages at chosen shares
  (``data_mix.add``); :mod:`~mmbert.data.mix.build` instantiates a ``data_mix`` config with it.

What every mix and source share is in :mod:`~mmbert.data.mix.base`; what a mix's token counts mean, and so how
a phase's tau turns them into target shares, in :mod:`~mmbert.data.mix.count_meaning`; the ``mixture.json``
schema in :mod:`~mmbert.data.mix.report`. The ``conf/data_mix/*.yaml`` files instantiate the mixes through
:mod:`mmbert.data` (``_target_: mmbert.data.SampleMix``), so this package's ``__init__`` stays empty: importing
one backend does not import the others.
"""
