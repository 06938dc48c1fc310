"""Figures and HTML reports, built from result files only."""

from steepest.app.report.html import Section, render_report, table_html, write_report

__all__ = ["Section", "render_report", "table_html", "write_report"]
