"""The upstream service: owns the Gemini CLI credentials and talks to Code Assist.

Modules, along the data path: server (gRPC servicer) → pool (credential choice, retries,
cool-downs) → credentials / project (auth headers, project discovery) → code_assist (HTTP
client, envelopes, error bodies) → sse (stream framing). errors maps failures to gRPC
statuses; settings holds the configuration; catalog the model list.
"""
