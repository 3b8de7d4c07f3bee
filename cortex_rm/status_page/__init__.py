"""The status pages people read in a browser: server-rendered HTML, no script, no build step.

``html_parts`` holds the page skeleton, tables and pager; ``cluster_views`` turns the RM's
in-process records (``RMContext``, the ledger's payout reports) into plain rows; and
``cluster_pages`` renders rows as pages.  Everything here is a pure function of its
arguments: the twisted.web resources that serve the pages and decide who sees what are in
``yarn_api/status_web.py``.  Every value from outside (application, user, queue, node and
host names, diagnostics, tracking URLs) is escaped with ``html.escape`` where it is written.
"""
