"""What ``hostkit daemon`` starts with unless told otherwise.

Kept apart from the modules that use them so that building the command line
(every ``hostkit`` command does) imports none of the daemon itself.
"""

#: Items resolved at a time, across all jobs (``--jobs``).
CONCURRENCY = 4
#: Items one caller may have waiting or running (``--max-queued``).
MAX_PENDING = 2000
#: Seconds without progress after which a running item is stopped, kind ``stalled``
#: (``--stall``).
STALL_SECONDS = 30.0
#: The background scrub's pace, bytes per second: a trickle next to any disk's bandwidth
#: (``--scrub-rate``).
SCRUB_RATE = 20 << 20
