"""One engine call, built from composed parts (each module has one job):

data.py        CallData (the call's fixed facts) and Trail (every try and skip)
targets.py     a policy / pin / bare model name resolved into a Leg
walk.py        Walk: the candidates in try order, with static eligibility
admission.py   Admission: breakers, rate-limit lease, budget reservation (or Skip)
attempt.py     Attempt: one try as an async context manager, the only place a try
               is settled, failed or aborted (in flight, stats, ledger, limiter,
               budget, breakers)
retry.py       RetryPolicy: a route's retry plan compiled once into tenacity objects
operations.py  what one try does with its adapter (complete, open a stream, ...)
failover.py    Failover: the one loop over candidates and retries, for every operation
stream.py      relaying an opened stream, replaying a cached answer
chat.py        ChatCall: cache, failover, finish (response, stats, cache)

ChatCall -> Walk (targets) -> Failover.answer(op)
             for each candidate: Attempt(Admission) + op, retried by RetryPolicy
         -> finish (non-streaming) | relay -> finish (streaming)
"""
