"""WSGI entry point; with DERMAL_PRELOAD on, loads the model before serving."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dermal_site.settings")
application = get_wsgi_application()

from classifier import services  # noqa: E402  (needs the settings configured above)

services.start()
