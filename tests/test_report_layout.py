"""The HTML report fits the page (issue 19 item 6: the routing block used to overflow it).

Long preformatted lines (compare's routing.txt lists every parameter with its group) wrap inside the
page's width, and tables scroll in their own box instead of widening the page.
"""

from __future__ import annotations

import re

from steepest.app.report.html import Section, render_report


def test_long_routing_lines_wrap_and_tables_scroll_in_their_own_box():
    line = "transformer.h.0.attn.c_attn.weight " * 20  # ~700 characters on one line
    page = render_report(
        "t", [Section("Routing", preformatted=line), Section("Table", tables=[(["a"] * 30, [[1.0] * 30])])]
    )
    css = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    pre = re.search(r"pre\{([^}]*)\}", css).group(1)
    assert "white-space:pre-wrap" in pre and "overflow-wrap:anywhere" in pre
    assert re.search(r"\.wide\{[^}]*overflow-x:auto", css)
    assert '<div class="wide"><table>' in page and page.count("<table>") == page.count('<div class="wide"><table>')
    assert "max-width:1100px" in css  # the page itself keeps its reading width
