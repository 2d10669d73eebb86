"""The edge service: license keys, limits, usage ledger, the Gemini-native and OpenAI APIs.

Entry points: `python -m services.edge` (the server), `python -m services.edge.keys` (admin CLI),
`services.edge.app.create_app(settings)` (the ASGI app).
"""
