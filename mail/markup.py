"""The one rule for HTML inboxd stores or sends: nh3 (ammonia) keeps formatting markup and
drops scripts, event handlers and javascript: URLs; links open with rel="noopener noreferrer".

Signatures (resolvers), received bodies (``mail.parse``) and sent bodies (``mail.compose``)
all go through ``sanitize_html``, so the three can never drift apart. The two converters give
a signature its other form when the inbox stores only one of them.
"""

from __future__ import annotations

import html
import re

import nh3

# Where a line ends in rendered HTML: a line break, or the end of a block.
_LINE_ENDS = re.compile(r"<br\s*/?>|</(?:p|div|li|tr|h[1-6]|blockquote|pre)\s*>", re.IGNORECASE)
_BLANK_RUNS = re.compile(r"\n{3,}")


def sanitize_html(markup: str) -> str:
    """``markup`` with only safe formatting left ("" when nothing is)."""
    return nh3.clean(markup, link_rel="noopener noreferrer")


def html_to_text(markup: str) -> str:
    """Plain text of ``markup``: line breaks kept, every tag (and script or style content)
    dropped, entities decoded."""
    text = nh3.clean(_LINE_ENDS.sub("\n", markup), tags=set())
    lines = [line.strip() for line in html.unescape(text).splitlines()]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


def text_to_html(text: str) -> str:
    """``text`` as HTML that shows it as typed: escaped, line breaks as <br>."""
    return "<br>\n".join(html.escape(line) for line in text.splitlines())
