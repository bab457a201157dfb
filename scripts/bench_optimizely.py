"""Drives the Python optimizely-sdk for herald-bench's `client` group.

Usage: bench_optimizely.py SINK_URL N BATCH_SIZE

Tracks N conversion events through Optimizely's own BatchEventProcessor and default
EventDispatcher, with only the dispatch URL pointed at SINK_URL, and prints one JSON line:
{"events": N, "seconds": s, ...} where s runs from the first track() to the moment every
event has left (close() returned and the processor's thread ended).
"""

import json
import queue
import sys
import time

from optimizely.event.event_processor import BatchEventProcessor
from optimizely.event_dispatcher import EventDispatcher
from optimizely.optimizely import Optimizely

# The smallest valid v4 datafile that knows the event "order": no experiments, no flags, no
# audiences, no ODP integration (so the ODP manager sends nothing).
DATAFILE = {
    "version": "4",
    "accountId": "10001",
    "projectId": "20001",
    "revision": "1",
    "sdkKey": "bench",
    "environmentKey": "production",
    "anonymizeIP": False,
    "botFiltering": False,
    "sendFlagDecisions": False,
    "events": [{"key": "order", "id": "30001", "experimentIds": []}],
    "experiments": [],
    "featureFlags": [],
    "rollouts": [],
    "audiences": [],
    "typedAudiences": [],
    "groups": [],
    "attributes": [],
    "variables": [],
    "integrations": [],
}


class SinkDispatcher:
    """Optimizely's default EventDispatcher with only the URL rewritten: the request (a new
    requests.Session per batch, urllib3 retries on 5xx, 10 s timeout) is their code."""

    def __init__(self, url):
        self.url = url

    def dispatch_event(self, event):
        event.url = self.url
        EventDispatcher.dispatch_event(event)


def main():
    sink_url, n, batch_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    processor = BatchEventProcessor(
        event_dispatcher=SinkDispatcher(sink_url),
        # The one setting that is not the default: process() drops an event (put_nowait)
        # when the queue is full, and with the default capacity (1000) a track() loop drops
        # most of them (its dispatch thread sends a batch while the loop queues ~30 µs
        # events). A queue that holds all N makes the SDK deliver every event, so both
        # clients are timed for the same work.
        event_queue=queue.Queue(maxsize=n),
        batch_size=batch_size,
        flush_interval=30,
        start_on_init=True,
    )
    client = Optimizely(datafile=json.dumps(DATAFILE), event_processor=processor)
    assert client.is_valid, "the datafile is invalid"
    # Herald's event property plan=pro maps to an event tag: per-event metadata, sent in the
    # event's "tags" (attributes would describe the visitor, not the event).
    tags = {"plan": "pro"}
    users = [f"user-{i}" for i in range(1000)]

    # Count drops anyway (there should be none) so that a short count at the sink is
    # explained, not hidden.
    dropped = 0
    original_put = processor.event_queue.put_nowait

    def counting_put(item):
        nonlocal dropped
        try:
            original_put(item)
        except queue.Full:
            dropped += 1
            raise

    processor.event_queue.put_nowait = counting_put

    start = time.perf_counter()
    for i in range(n):
        client.track("order", users[i % 1000], event_tags=tags)
    tracked = time.perf_counter() - start
    # close() -> processor.stop(): queues the shutdown signal and joins the thread, but for
    # at most timeout_interval (5 s by default); the thread is a daemon, so what it had not
    # sent by then would be lost at exit. Wait for it to end so every event has left.
    client.close()
    close_timed_out = processor.is_running
    if processor.executor is not None:
        processor.executor.join()
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "events": n,
                "seconds": seconds,
                "track_seconds": tracked,
                "dropped": dropped,
                "close_timed_out": close_timed_out,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
