"""The engine's live state behind async protocols, and the backends that keep it.

    protocols.py        RateLimiter, BudgetStore, ResponseCache, Ledger (+ SpendSource) and
                        the values they pass (Lease, Reservation, LedgerRow)
    ratelimit/          InProcessRateLimiter: window, learned limits, key choice, FIFO queue
    budget.py           InProcessBudgetStore: one process, exact under concurrency
    sqlite_budget.py    SQLiteBudgetStore: one file shared by every process on a host
    sqlite_ratelimit.py SQLiteRateLimiter: the same for provider-key rate limits
    sqlite_shared.py    SharedFile: how their transactions reach the file (at once when free,
                        one per event-loop turn for the rest, waits on a private thread)
    money.py            the budget arithmetic both share (UTC periods, nano-dollars, the check)
    cache.py            cache_key() and LRUCache: the in-process response cache
    ledger.py           SQLiteLedger (batched writer thread) and NullLedger
    journal.py          the ledgers' per-process journal: each row on disk as it is recorded,
                        replayed (idempotently, by row id) at start after a crash
    ledger_file.py      the SQLite ledger's schema, connections, read side, open_ledger()
    redis_*.py          RedisBudgetStore, RedisCache (one Redis shared by every replica)
    postgres_ledger.py  PostgresLedger (asyncpg, batched, journaled through an outage)

This package sees plans and leaf modules only (an import contract keeps it so): a backend
never reaches into the runtime, and the runtime reaches a backend only through the
protocols. Which backend serves an engine is the composition root's choice.
"""
