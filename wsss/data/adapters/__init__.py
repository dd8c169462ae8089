"""Built-in dataset adapters; importing this package registers them (see :func:`wsss.data.base.create_adapter`)."""

from wsss.data.adapters import csv, dagm, folder, ksdd, ksdd2, mtd, mvtec, neu, synthetic  # noqa: F401
