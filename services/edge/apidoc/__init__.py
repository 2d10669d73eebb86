"""The public API's OpenAPI document (`{ROOT_PATH}/openapi.json`) and what it is made of.

Routes stay plain Starlette endpoints that read raw bytes (see routes/gemini.py for why):
documentation never parses or validates a request. Each route declares what it serves with
`Operation`s attached to its endpoint (`documented`); `build.openapi()` turns the app's routes
and these pydantic models into the document.
"""
