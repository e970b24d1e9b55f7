"""A Python client of the jupyter-sse API: list, get, cancel and delete jobs, and follow their events.

```python
from jupyter_sse.client import Client, find_server

server = find_server()  # explicit url/token, JUPYTER_SSE_URL, or the newest running Jupyter server
with Client(server.url, server.token) as client:
    for event in client.follow(job_id):  # ends after the job's terminal state
        print(event.event, event.data)
```

`follow` reconnects by itself (backoff, `Last-Event-ID`, and the wait a server at its cap on streams asks for
with `Retry-After`); HTTP errors raise `ClientError`.
"""

from ._async import AsyncClient
from ._common import ClientError, Event
from ._discovery import ServerInfo, find_server
from ._sync import Client

__all__ = ["AsyncClient", "Client", "ClientError", "Event", "ServerInfo", "find_server"]
