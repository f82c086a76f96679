"""E-mail: rendering (``render.py``: Jinja2 + css-inline, pure) and sending (``send.py``).

Rendering never touches the database, Flask or Celery: it turns plain dataclasses and a
:class:`~ingest.preferences.Preferences` snapshot into a ready
:class:`email.message.EmailMessage`. Each e-mail type is one folder under
``templates/email/`` (``subject.txt``, ``body.txt``, ``body.html``), registered in
:class:`ingest.mail.render.EmailType`.
"""
