"""Drop-ins that put hostkit under other tools' own APIs (:mod:`hostkit.integrations.medperf`)."""
