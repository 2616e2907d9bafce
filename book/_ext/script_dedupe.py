"""A Sphinx extension for this book: every inline script appears once in a page's <head>.

sphinx-thebe and sphinx-togglebutton (both loaded by Jupyter Book 1) add inline scripts such as
`const THEBE_JS_URL = ...` after the HTML builder has started; under Sphinx 7.4 the builder then
holds them twice (once with filename None, once with ''), so every page declared the same `const`
twice and the browser logged "Identifier 'THEBE_JS_URL' has already been declared". Dropping the
second copy of an identical script fixes that and changes nothing else.
"""


def _dedupe(app, pagename, templatename, context, doctree):
    seen, kept = set(), []
    for script in context.get("script_files", []):
        key = (script.filename or "", script.priority, tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app):
    # late (priority 900): after the other extensions have added their scripts to the page
    app.connect("html-page-context", _dedupe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
