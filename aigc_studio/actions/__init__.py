"""Operations as plain functions over request dataclasses: the one path the tabs, the typed
API, the CLI and the OpenAI endpoint share. Gradio-free."""
