"""The faces users touch: the ``df.massiva`` accessor, notebook widgets, the CLI, the demo.

- :mod:`.accessor` -- ``df.massiva``, forwarding to the verbs;
- :mod:`.widgets` -- ``SendWidget`` and ``DeliveryDashboard`` (ipywidgets);
- :mod:`.cli` and :mod:`.commands` -- ``massiva-frames COMMAND``;
- :mod:`.followup` -- ``resend``: what the callbacks said, handed to the follow-up send;
- :mod:`.demo` -- the end-to-end demo against the embedded sandbox.

They wire user interaction to the verbs and hold no business rule of their own.
"""

__all__: list[str] = []
