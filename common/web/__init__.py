"""`clafed serve`'s web app: the pages of a site (diagnose a case, browse its results) and of the
coordinator (watch a run), served by FastAPI behind one access policy (common/web/access.py).

Pages are server-rendered Jinja templates (autoescaped) with a little plain JavaScript from
static/, no front-end build step. The routes live beside what they show: client/web_diagnose.py,
client/web_site.py and server/web_monitor.py.
"""
