"""{{ cookiecutter.description | replace('"', "'") }}"""

# The only rendered module of the package: everything else is plain Python copied as is.
PROJECT = "{{ cookiecutter.project }}"
PACKAGE = "{{ cookiecutter.package }}"
__version__ = "0.1.0"
