"""``slimsql serve``: the road of one question over HTTP, and a web page.

:mod:`.service` is the server without HTTP (one model behind many clients, only the
databases named at start); :mod:`.app` maps routes onto it with FastAPI; ``static/``
is the page. Install with ``pip install 'slimsql[serve]'``.
"""
