from setuptools import setup, Extension
setup(name="ccerror", version="1.0", ext_modules=[Extension("ccerror", ["c.c"])])
