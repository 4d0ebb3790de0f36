"""The wire: the Massiva API's protocol and the HTTP client that speaks it.

- :mod:`.protocol` -- parameters, encodings, the XML answers and status codes (pure, no I/O);
- :mod:`.client` -- :class:`~massiva_frames.wire.client.MassivaClient`: HTTP, deadlines,
  retries, credentials.

Knows the API, never DataFrames. Imports only :mod:`massiva_frames.errors`.
"""

__all__: list[str] = []
