"""A deterministic stand-in for GH Archive: events shaped, sized and mixed like real ones.

`generate_events(seed, start_hour, hours, events_per_hour)` yields `Event(ts_ms, repo, line)` like
`reader.read_file` does, so a benchmark or a test can use either.  What it imitates, measured on
real hours (2015-01-01-12 and 2021-07-21 samples):
- the event-type mix (PushEvent ~50%, CreateEvent ~12%, WatchEvent ~8.5%, ...; Watch+Fork+PR ~15%);
- sizes: ~2 KB of JSON per event on average; PR and review-comment events carry full API objects;
- a Zipf-like popularity of repositories (a few very busy ones, a long tail) and of actors; with
  `long_tail=K`, also K equally rare repositories taking TAIL_SHARE of the events (a real 2018 day
  spreads its stars, forks and PRs over ~10^5 repositories, more than the Zipf head gives);
- bursts: a few short windows per hour with many more events, partly on one repository;
- files mostly but not strictly ordered by created_at, and the odd repeated event (same id);
- PR and issue titles that sometimes contain HTML such as `<script>alert(1)</script>`.
Each hour depends only on (seed, hour), so a replay started later sees the same hours.
"""
import random
from datetime import datetime
from typing import Iterator

import orjson

from . import config
from .hours import HOUR, as_hour, hour_name, ms
from .reader import Event

N_REPOS = 50_000
N_USERS = 100_000
MAX_EVENTS_PER_HOUR = 10_000_000      # ids are hour_index * 10M + n, so an hour cannot hold more

# (type, percent of events)
EVENT_MIX = (
    ("PushEvent", 50.0), ("CreateEvent", 12.0), ("WatchEvent", 8.5), ("IssueCommentEvent", 7.0),
    ("PullRequestEvent", 4.5), ("IssuesEvent", 4.0), ("DeleteEvent", 3.0),
    ("PullRequestReviewCommentEvent", 2.5), ("ForkEvent", 2.0), ("GollumEvent", 2.0),
    ("ReleaseEvent", 1.5), ("CommitCommentEvent", 1.5), ("MemberEvent", 1.0), ("PublicEvent", 0.5),
)
DUPLICATE_RATE = 0.001      # the archive repeats an event now and then; so do we
DISORDER_RATE = 0.005       # events stamped a few seconds before their neighbours
BURST_SHARE = 0.2           # share of an hour's events that fall into its bursts
HTML_TITLE_RATE = 0.03      # PR/issue titles with markup in them
TAIL_SHARE = 0.4            # with a long tail: share of events on its repositories
HTML_SNIPPETS = ("<script>alert(1)</script>", "<b>bold</b>", "<img src=x onerror=alert(1)>",
                 "<i>WIP</i>", "</title><h1>", "&lt;div&gt; & <div>", '"><svg onload=alert(1)>')

WORDS = ("add fix update remove refactor test docs build release bump merge support handle improve "
         "parser server client cache config api cli ui layout style query index schema model view "
         "router worker queue stream event log metric token auth user session error retry timeout "
         "memory leak race crash typo readme license version dependency upgrade migrate deploy "
         "docker kafka python rust go java node react vue linux kernel driver network socket http "
         "json yaml csv file path plugin module package script shell color theme font icon image "
         "the a of for in on with when from to and not is should now").split()
OWNER_WORDS = ("open quantum rapid blue red green dark bright tiny mega cloud data deep fast smart "
               "pixel byte code dev hack star moon sun river stone iron silver golden north "
               "south").split()
PROJECT_WORDS = ("json kit lab core engine tools api cli db ml web ui auth bot map chart grid "
                 "stream flow hub box craft forge press shell sync vault lens dash notes "
                 "tracker").split()
LANGUAGES = ("JavaScript", "Python", "Java", "Go", "Ruby", "PHP", "C++", "C", "TypeScript", "Rust",
             "Shell", "C#", None)
BRANCHES = ("master", "main", "develop", "gh-pages", "feature/login", "fix/crash", "patch-1")


def _zipf_cum(n: int, offset: float, s: float) -> list[float]:
    """Cumulative weights 1/(rank+offset)^s: a few heavy ranks, a long tail."""
    total, cum = 0.0, []
    for r in range(1, n + 1):
        total += 1.0 / (r + offset) ** s
        cum.append(total)
    return cum


class _Universe:
    """The users and repositories of one seed."""

    def __init__(self, seed: int):
        self.seed = seed
        rng = random.Random(f"universe/{seed}")
        self.users = []
        for i in range(N_USERS):
            a, b = rng.choice(OWNER_WORDS), rng.choice(PROJECT_WORDS)
            login = f"{a}{b}{i}" if i % 3 else f"{a}-{b}-{i}"
            if i % 997 == 5:
                login += "[bot]"
            self.users.append((login, 1000 + i * 37 + rng.randrange(37)))
        self.repos = []
        for i in range(N_REPOS):
            if rng.random() < 0.27:      # ~27% of real events carry an `org`
                owner, owner_id = f"{rng.choice(OWNER_WORDS)}-{rng.choice(OWNER_WORDS)}-org{i}", 5_000_000 + i
                is_org = True
            else:
                owner, owner_id = self.users[rng.randrange(N_USERS)]
                is_org = False
            name = f"{rng.choice(PROJECT_WORDS)}-{rng.choice(PROJECT_WORDS)}"
            if rng.random() < 0.3:
                name += f".{rng.choice(('js', 'py', 'go', 'rs', 'github.io'))}"
            self.repos.append((f"{owner}/{name}", 10_000_000 + i * 53 + rng.randrange(53),
                               owner, owner_id, is_org, rng.choice(LANGUAGES)))
        self.repo_cum = _zipf_cum(N_REPOS, 10.0, 1.0)
        self.user_cum = _zipf_cum(N_USERS, 5.0, 0.9)
        self.type_names = [t for t, _ in EVENT_MIX]
        self.type_cum = []
        total = 0.0
        for _, pct in EVENT_MIX:
            total += pct
            self.type_cum.append(total)

    def repo(self, ix: int) -> tuple:
        """Repository `ix`: one of the N_REPOS popular ones, or one of the long tail, made when
        asked for (a tail of 10^6 kept in memory would cost hundreds of MB)."""
        if ix < N_REPOS:
            return self.repos[ix]
        rng = random.Random(f"tail/{self.seed}/{ix}")
        owner, owner_id = self.users[rng.randrange(N_USERS)]
        name = f"{rng.choice(PROJECT_WORDS)}-{rng.choice(PROJECT_WORDS)}-{ix}"   # ix: unique
        return (f"{owner}/{name}", 10_000_000 + ix * 53 + rng.randrange(53), owner, owner_id, False,
                rng.choice(LANGUAGES))


_universes: dict[int, _Universe] = {}


def _universe(seed: int) -> _Universe:
    if seed not in _universes:
        _universes.clear()          # one seed at a time is the normal case; do not grow
        _universes[seed] = _Universe(seed)
    return _universes[seed]


def _user_obj(login: str, uid: int, kind: str = "User") -> dict:
    """A user as the GitHub API nests it in payloads (all its URL fields: that is the real size)."""
    u = f"https://api.github.com/users/{login}"
    return {"login": login, "id": uid, "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=3",
            "gravatar_id": "", "url": u, "html_url": f"https://github.com/{login}",
            "followers_url": f"{u}/followers", "following_url": f"{u}/following{{/other_user}}",
            "gists_url": f"{u}/gists{{/gist_id}}", "starred_url": f"{u}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{u}/subscriptions", "organizations_url": f"{u}/orgs",
            "repos_url": f"{u}/repos", "events_url": f"{u}/events{{/privacy}}",
            "received_events_url": f"{u}/received_events", "type": kind, "site_admin": False}


def _repo_obj(full_name: str, rid: int, owner: dict, rng: random.Random, language, ts: str,
              fork: bool = False) -> dict:
    """A repository as the API nests it (forkee, PR head/base)."""
    u = f"https://api.github.com/repos/{full_name}"
    stars = int(rng.paretovariate(1.2)) - 1
    d = {"id": rid, "name": full_name.split("/", 1)[1], "full_name": full_name, "owner": owner,
         "private": False, "html_url": f"https://github.com/{full_name}",
         "description": _sentence(rng, 3, 12), "fork": fork, "url": u}
    for key in ("forks", "keys", "collaborators", "teams", "hooks", "issue_events", "events",
                "assignees", "branches", "tags", "blobs", "git_tags", "git_refs", "trees",
                "statuses", "languages", "stargazers", "contributors", "subscribers",
                "subscription", "commits", "git_commits", "comments", "issue_comment", "contents",
                "compare", "merges", "archive", "downloads", "issues", "pulls", "milestones",
                "notifications", "labels", "releases"):
        d[f"{key}_url"] = f"{u}/{key}"
    d.update({"created_at": ts, "updated_at": ts, "pushed_at": ts,
              "git_url": f"git://github.com/{full_name}.git", "ssh_url": f"git@github.com:{full_name}.git",
              "clone_url": f"https://github.com/{full_name}.git", "svn_url": f"https://github.com/{full_name}",
              "homepage": None, "size": rng.randrange(50_000), "stargazers_count": stars,
              "watchers_count": stars, "language": language, "has_issues": True,
              "has_downloads": True, "has_wiki": True, "has_pages": False, "forks_count": stars // 7,
              "mirror_url": None, "open_issues_count": rng.randrange(30), "forks": stars // 7,
              "open_issues": rng.randrange(30), "watchers": stars, "default_branch": "master"})
    return d


_sentence_pools: dict[tuple[int, int], list[str]] = {}


def _sentence(rng: random.Random, lo: int, hi: int) -> str:
    """A sentence of lo..hi words, drawn from a fixed pool (joining fresh words per event was
    the generator's main cost)."""
    pool = _sentence_pools.get((lo, hi))
    if pool is None:
        prng = random.Random(f"sentences/{lo}/{hi}")
        pool = [" ".join(prng.choices(WORDS, k=prng.randint(lo, hi))).capitalize()
                for _ in range(2048)]
        _sentence_pools[(lo, hi)] = pool
    return pool[rng.getrandbits(11)]


def _title(rng: random.Random) -> str:
    title = _sentence(rng, 3, 10)
    if rng.random() < HTML_TITLE_RATE:
        title = f"{title} {rng.choice(HTML_SNIPPETS)}"
    return title


def _body(rng: random.Random, mean_words: int) -> str:
    paragraphs = []
    for _ in range(rng.randint(0, 4)):
        paragraphs.append(_sentence(rng, mean_words // 4, mean_words // 2) + ".")
        if rng.random() < 0.2:
            paragraphs.append(f"```\n{rng.choice(WORDS)}({rng.randrange(100)})\n```")
    return "\r\n\r\n".join(paragraphs)


def _sha(rng: random.Random) -> str:
    return f"{rng.getrandbits(160):040x}"


class _Hour:
    """Builds the events of one hour."""

    def __init__(self, uni: _Universe, seed: int, hour: datetime):
        self.uni = uni
        self.rng = random.Random(f"hour/{seed}/{hour_name(hour)}")
        self.hour = hour

    def event(self, eid: int, etype: str, repo_ix: int, user_ix: int, ts: str) -> dict:
        full, rid, owner, owner_id, is_org, language = self.uni.repo(repo_ix)
        login, uid = self.uni.users[user_ix]
        ev = {"id": str(eid), "type": etype,
              "actor": {"id": uid, "login": login, "display_login": login.removesuffix("[bot]"),
                        "gravatar_id": "", "url": f"https://api.github.com/users/{login}",
                        "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?"},
              "repo": {"id": rid, "name": full, "url": f"https://api.github.com/repos/{full}"},
              "payload": getattr(self, etype)(full, rid, owner, owner_id, language, login, uid, ts),
              "public": True, "created_at": ts}
        if is_org:
            ev["org"] = {"id": owner_id, "login": owner, "gravatar_id": "",
                         "url": f"https://api.github.com/orgs/{owner}",
                         "avatar_url": f"https://avatars.githubusercontent.com/u/{owner_id}?"}
        return ev

    # One method per event type, named like the type; each returns the payload.
    def PushEvent(self, full, rid, owner, owner_id, language, login, uid, ts):
        rng = self.rng
        n = 1 if rng.random() < 0.8 else min(20, int(rng.paretovariate(1.0)) + 1)
        commits = [{"sha": _sha(rng), "author": {"email": f"{login}@users.noreply.github.com",
                                                  "name": login},
                    "message": _sentence(rng, 2, 14), "distinct": True,
                    "url": f"https://api.github.com/repos/{full}/commits/{_sha(rng)}"}
                   for _ in range(n)]
        return {"push_id": rng.randrange(10**9), "size": n, "distinct_size": n,
                "ref": f"refs/heads/{rng.choice(BRANCHES)}", "head": commits[-1]["sha"],
                "before": _sha(rng), "commits": commits}

    def CreateEvent(self, full, rid, owner, owner_id, language, login, uid, ts):
        ref_type = self.rng.choice(("repository", "branch", "branch", "tag"))
        ref = None if ref_type == "repository" else self.rng.choice(BRANCHES)
        return {"ref": ref, "ref_type": ref_type, "master_branch": "master",
                "description": _sentence(self.rng, 0, 12), "pusher_type": "user"}

    def DeleteEvent(self, full, rid, owner, owner_id, language, login, uid, ts):
        return {"ref": self.rng.choice(BRANCHES), "ref_type": "branch", "pusher_type": "user"}

    def WatchEvent(self, *args):
        return {"action": "started"}

    def PublicEvent(self, *args):
        return {}

    def _issue(self, full, login, uid, ts, number):
        rng = self.rng
        u = f"https://api.github.com/repos/{full}/issues/{number}"
        return {"url": u, "labels_url": f"{u}/labels{{/name}}", "comments_url": f"{u}/comments",
                "events_url": f"{u}/events", "html_url": f"https://github.com/{full}/issues/{number}",
                "id": rng.randrange(10**8), "number": number, "title": _title(rng),
                "user": _user_obj(login, uid), "labels": [], "state": "open", "locked": False,
                "assignee": None, "milestone": None, "comments": rng.randrange(20),
                "created_at": ts, "updated_at": ts, "closed_at": None, "body": _body(rng, 40)}

    def IssuesEvent(self, full, rid, owner, owner_id, language, login, uid, ts):
        action = self.rng.choice(("opened", "opened", "closed", "reopened"))
        return {"action": action, "issue": self._issue(full, login, uid, ts, self.rng.randint(1, 3000))}

    def IssueCommentEvent(self, full, rid, owner, owner_id, language, login, uid, ts):
        number = self.rng.randint(1, 3000)
        cid = self.rng.randrange(10**8)
        return {"action": "created", "issue": self._issue(full, login, uid, ts, number),
                "comment": {"url": f"https://api.github.com/repos/{full}/issues/comments/{cid}",
                            "html_url": f"https://github.com/{full}/issues/{number}#issuecomment-{cid}",
                            "issue_url": f"https://api.github.com/repos/{full}/issues/{number}",
                            "id": cid, "user": _user_obj(login, uid), "created_at": ts,
                            "updated_at": ts, "body": _body(self.rng, 30)}}

    def _pull_request(self, full, rid, owner, owner_id, language, login, uid, ts, number):
        rng = self.rng
        u = f"https://api.github.com/repos/{full}/pulls/{number}"
        html = f"https://github.com/{full}/pull/{number}"
        owner_obj = _user_obj(owner, owner_id)
        base_repo = _repo_obj(full, rid, owner_obj, rng, language, ts)
        head_sha = _sha(rng)
        return {"url": u, "id": rng.randrange(10**8), "html_url": html, "diff_url": f"{html}.diff",
                "patch_url": f"{html}.patch",
                "issue_url": f"https://api.github.com/repos/{full}/issues/{number}",
                "number": number, "state": "open", "locked": False, "title": _title(rng),
                "user": _user_obj(login, uid), "body": _body(rng, 40), "created_at": ts,
                "updated_at": ts, "closed_at": None, "merged_at": None, "merge_commit_sha": None,
                "assignee": None, "milestone": None, "commits_url": f"{u}/commits",
                "review_comments_url": f"{u}/comments",
                "comments_url": f"https://api.github.com/repos/{full}/issues/{number}/comments",
                "statuses_url": f"https://api.github.com/repos/{full}/statuses/{head_sha}",
                "head": {"label": f"{login}:{rng.choice(BRANCHES)}", "ref": rng.choice(BRANCHES),
                         "sha": head_sha, "user": _user_obj(login, uid), "repo": None},
                "base": {"label": f"{owner}:master", "ref": "master", "sha": _sha(rng),
                         "user": owner_obj, "repo": base_repo},
                "merged": False, "mergeable": None, "comments": rng.randrange(10),
                "review_comments": rng.randrange(5), "commits": rng.randint(1, 12),
                "additions": rng.randrange(500), "deletions": rng.randrange(200),
                "changed_files": rng.randint(1, 30)}

    def PullRequestEvent(self, full, *args):
        number = self.rng.randint(1, 2000)
        action = self.rng.choice(("opened", "opened", "closed", "reopened", "synchronize"))
        return {"action": action, "number": number,
                "pull_request": self._pull_request(full, *args, number)}

    def PullRequestReviewCommentEvent(self, full, rid, owner, owner_id, language, login, uid, ts):
        rng = self.rng
        number = rng.randint(1, 2000)
        cid = rng.randrange(10**8)
        pr = self._pull_request(full, rid, owner, owner_id, language, login, uid, ts, number)
        return {"action": "created",
                "comment": {"url": f"https://api.github.com/repos/{full}/pulls/comments/{cid}",
                            "id": cid, "diff_hunk": "@@ -1,3 +1,4 @@\n " + _sentence(rng, 5, 20),
                            "path": f"src/{rng.choice(WORDS)}.py", "position": rng.randrange(80),
                            "commit_id": _sha(rng), "user": _user_obj(login, uid),
                            "body": _body(rng, 20), "created_at": ts, "updated_at": ts,
                            "html_url": f"https://github.com/{full}/pull/{number}#discussion_r{cid}"},
                "pull_request": pr}

    def ForkEvent(self, full, rid, owner, owner_id, language, login, uid, ts):
        fork_name = f"{login}/{full.split('/', 1)[1]}"
        forkee = _repo_obj(fork_name, self.rng.randrange(10**8), _user_obj(login, uid), self.rng,
                           None, ts, fork=True)
        forkee["public"] = True
        return {"forkee": forkee}

    def GollumEvent(self, full, *args):
        title = self.rng.choice(WORDS).capitalize()
        return {"pages": [{"page_name": title, "title": title, "summary": None,
                           "action": self.rng.choice(("created", "edited")), "sha": _sha(self.rng),
                           "html_url": f"https://github.com/{full}/wiki/{title}"}]}

    def ReleaseEvent(self, full, rid, owner, owner_id, language, login, uid, ts):
        tag = f"v{self.rng.randint(0, 5)}.{self.rng.randint(0, 20)}.{self.rng.randint(0, 9)}"
        return {"action": "published",
                "release": {"url": f"https://api.github.com/repos/{full}/releases/{self.rng.randrange(10**7)}",
                            "html_url": f"https://github.com/{full}/releases/tag/{tag}",
                            "tag_name": tag, "target_commitish": "master", "name": tag,
                            "draft": False, "author": _user_obj(login, uid), "prerelease": False,
                            "created_at": ts, "published_at": ts, "assets": [],
                            "body": _body(self.rng, 30)}}

    def CommitCommentEvent(self, full, rid, owner, owner_id, language, login, uid, ts):
        cid, sha = self.rng.randrange(10**7), _sha(self.rng)
        return {"comment": {"url": f"https://api.github.com/repos/{full}/comments/{cid}",
                            "html_url": f"https://github.com/{full}/commit/{sha}#commitcomment-{cid}",
                            "id": cid, "user": _user_obj(login, uid), "position": None, "line": None,
                            "path": None, "commit_id": sha, "created_at": ts, "updated_at": ts,
                            "body": _body(self.rng, 15)}}

    def MemberEvent(self, full, rid, owner, owner_id, language, login, uid, ts):
        other, other_id = self.uni.users[self.rng.randrange(N_USERS)]
        return {"member": _user_obj(other, other_id), "action": "added"}


def _seconds(rng: random.Random, n: int) -> tuple[list[int], list[int]]:
    """Second offsets within the hour for n events, and which burst each belongs to (-1: none).

    A steady background plus 1-4 bursts of 30 s to 5 min, sorted, then a few events nudged a
    few seconds earlier, because archive files are only mostly in order."""
    bursts = [(rng.randrange(3600), rng.randint(30, 300)) for _ in range(rng.randint(1, 4))]
    burst_n = int(n * BURST_SHARE)
    pairs = [(rng.randrange(3600), -1) for _ in range(n - burst_n)]
    for i in range(burst_n):
        b = i % len(bursts)
        centre, width = bursts[b]
        pairs.append((min(3599, max(0, int(rng.gauss(centre, width / 4)))), b))
    pairs.sort()
    secs = [s for s, _ in pairs]
    for i in range(n):
        if rng.random() < DISORDER_RATE:
            secs[i] = max(0, secs[i] - rng.randint(1, 5))
    return secs, [b for _, b in pairs]


def generate_hour(seed: int, hour, events_per_hour: int, long_tail: int = 0) -> Iterator[Event]:
    """The `events_per_hour` events (lines) of one synthetic archive hour, in file order;
    `long_tail` extra, equally rare repositories get TAIL_SHARE of them."""
    hour = as_hour(hour)
    if not 0 < events_per_hour <= MAX_EVENTS_PER_HOUR:
        raise ValueError(f"events_per_hour must be 1..{MAX_EVENTS_PER_HOUR}")
    if long_tail < 0:
        raise ValueError("long_tail must be >= 0")
    uni = _universe(seed)
    h = _Hour(uni, seed, hour)
    rng = h.rng
    n = events_per_hour
    secs, burst_of = _seconds(rng, n)
    types = rng.choices(uni.type_names, cum_weights=uni.type_cum, k=n)
    repo_ix = rng.choices(range(N_REPOS), cum_weights=uni.repo_cum, k=n)
    user_ix = rng.choices(range(N_USERS), cum_weights=uni.user_cum, k=n)
    # A third of a burst's events go to one repository that is suddenly popular.
    burst_repo = rng.choices(range(N_REPOS), cum_weights=uni.repo_cum, k=4)
    for i in range(n):
        if burst_of[i] >= 0 and rng.random() < 0.33:
            repo_ix[i] = burst_repo[burst_of[i]]
    if long_tail:        # drawn after everything else, so long_tail=0 leaves the hour as it was
        for i in range(n):
            if rng.random() < TAIL_SHARE:
                repo_ix[i] = N_REPOS + rng.randrange(long_tail)
    base_ms = ms(hour)
    prefix = f"{hour:%Y-%m-%dT%H}:"
    stamps = [f"{prefix}{s // 60:02d}:{s % 60:02d}Z" for s in range(3600)]
    first_id = int((hour - datetime(2011, 1, 1, tzinfo=hour.tzinfo)) / HOUR) * MAX_EVENTS_PER_HOUR
    dumps, eid, prev = orjson.dumps, first_id, None
    for i in range(n):
        if prev is not None and rng.random() < DUPLICATE_RATE:
            yield prev
            continue
        s = secs[i]
        eid += 1
        ev = h.event(eid, types[i], repo_ix[i], user_ix[i], stamps[s])
        prev = Event(base_ms + s * 1000, ev["repo"]["name"], dumps(ev))
        yield prev


def generate_events(seed: int = config.DEFAULT_SEED, start_hour=config.DEFAULT_START,
                    hours: int = 1,
                    events_per_hour: int = config.DEFAULT_EVENTS_PER_HOUR,
                    long_tail: int = 0) -> Iterator[Event]:
    """`hours` synthetic archive hours from `start_hour` (datetime or "YYYY-MM-DD-H"), one after
    the other: `Event(ts_ms, repo, line)` tuples, deterministic for a seed (and long tail)."""
    first = as_hour(start_hour)
    for i in range(hours):
        yield from generate_hour(seed, first + i * HOUR, events_per_hour, long_tail)
