# A package, so that its conftest is imported as "tests.conftest" and does not
# take the module name "conftest" from the project's top-level conftest.py
# (conftest.py files outside packages all share that name). The directory
# above it, examples/flaskr, is then put on sys.path: "import flaskr" works.
