"""Running sleeves on Ray: the engine (every sleeve in parallel, streamed back), reaching a cluster
(code shipping, preflight, auth) and Ray's notices about our own settings. `ray` itself is
imported lazily, inside the functions that use it, so importing this package stays cheap."""
