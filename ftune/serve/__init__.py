"""`ftune serve`'s HTTP code (FastAPI), over one loaded `ftune.inference.Inference`.

app.py builds the app (middleware: API key, limits, error JSON; /health, /info) and mounts predict.py's
/predict and, for runs that generate, openai.py's OpenAI-compatible /v1 routes. http.py holds what those
share (settings, errors, the JSON body reader) and batcher.py the single model thread. Imports go one way:
serve → inference → engine/tasks; nothing below imports this package.
"""
