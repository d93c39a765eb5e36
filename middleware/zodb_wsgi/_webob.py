"""WebOb, imported without its warning about the ``cgi`` module.

WebOb 1.8 imports ``cgi``, which Python 3.11 and 3.12 deprecate; the warning
is about WebOb's code, not the application's, and nothing the user of this
package can act on, so it is silenced at this one import.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "'cgi' is deprecated", DeprecationWarning)
    import webob
    import webob.exc
    import webob.request

__all__ = ["webob"]
