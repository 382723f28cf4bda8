"""The cluster: five components, run in one process or as separate processes.

component
    pipeline manager (8083), recorder (8084), chunk processor (8085), storage (8086),
    API gateway (8087). Each implements one interface of :mod:`.interfaces`.
assembly
    The one module that decides, per dependency, whether a component gets the local
    object or a gRPC client (:mod:`.assembly`).
lifecycle
    Every service goes starting -> running -> stopping (or failed); modules start in
    dependency order and stop in reverse (:mod:`.lifecycle`).
"""
