"""The image store: one LMDB of every level 4 ... res_max of a data set, checksummed.

- ``format``: keys, checksums and record encodings; ``reader``: metadata and the Dataset;
  ``check``: ``data.mdb`` checked against its own header and tree before LMDB maps it;
  ``verify``: every record against its checksum (``progan info --verify``).
- ``writer``: ``prepare_lmdb`` (``progan prepare-lmdb``) from a folder or zip of images.
- ``demo``: procedurally generated faces, the demo's and the tests' data set.

Importing this package imports none of them.
"""
