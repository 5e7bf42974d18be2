#!/usr/bin/python3
"""Django's command-line utility for the dermal example site."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dermal_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
