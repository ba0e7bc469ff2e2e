"""In-process transport: drives a lib/uspdm Responder directly (tests, benchmarks).

    t = LoopbackTransport(responder)
    Requester(t).init_connection()

`spdm(request, timeout)` hands the bytes to `responder.handle()` and returns its
answer.  Deferred work (a response announced with ResponseNotReady) is done
between requests, as the board's main loop would: `responder.work()` is called
until `responder.pending()` is false, before the next request is handled.
`log` keeps (request, response) pairs; `drop` can be set to a callable
`drop(request) -> bool` that makes a request go unanswered (TimeoutError).
"""


class LoopbackTransport:
    def __init__(self, responder, max_work_steps=100000, log=False):
        self.r = responder
        self.max_work_steps = max_work_steps
        self.log = [] if log else None
        self.drop = None
        self.requests = 0

    def _work(self):
        pending = getattr(self.r, "pending", None)
        if pending is None:
            return
        n = 0
        while self.r.pending():
            self.r.work()
            n += 1
            if n > self.max_work_steps:
                raise RuntimeError("responder work() does not finish")

    def spdm(self, request, timeout=None):
        self.requests += 1
        self._work()
        if self.drop is not None and self.drop(bytes(request)):
            raise TimeoutError("request dropped (test)")
        rsp = self.r.handle(bytes(request))
        if rsp is None:
            raise TimeoutError("responder gave no answer")
        rsp = bytes(rsp)
        if self.log is not None:
            self.log.append((bytes(request), rsp))
        return rsp

    def close(self):
        pass
