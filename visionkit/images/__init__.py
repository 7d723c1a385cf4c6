"""Images: from any cell (path, bytes, PIL image, data URI, URL) to headers, pixels and data URIs.

One job per module, lowest first:

- ``formats``: magic-byte sniffing, sizes read from header bytes, MIME types, JPEG markers.
- ``download``: http(s) downloads with a size cap and a timeout.
- ``bombs``: the decompression-bomb policy (what one decode may allocate).
- ``pil_messages``: Pillow's warnings and libtiff's C messages, captured per thread.
- ``pil_errors``: every exception from Pillow and the OS as the row's ``ImageError``.
- ``remote``: fsspec URLs (``s3://``, ``gs://``, ``az://``...): options, listing, reading.
- ``table_refs``: references to a table's value (``x.parquet#image[3]``), open Parquet files.
- ``cells``: what an image cell may be, its bytes, and the DataFrame image-column rule.
- ``decode``: lazy opening, EXIF orientation, 8-bit conversion, ``decode_image``.
- ``rows``: the header-row schema (``read_images``' columns) and the frame of rows.
- ``headers`` / ``remote_headers``: one header row per cell; ranged reads for remote ones.
- ``metadata``: lossless byte-level metadata stripping for passthrough.
- ``encode``: ``encode_image`` / ``encode_series`` (format, size and byte-budget choice).
- ``tables``: image columns of Parquet files and ``datasets`` as header frames.
- ``read``: ``read_images`` / ``inspect_images`` (header-only DataFrames).
- ``thumbnails``: small cached JPEG/PNG thumbnails and the ``df.vision.show()`` HTML grid.

The public names are re-exported by ``visionkit`` itself (``vk.read_images``, ...).
"""
