from twisted.application.service import ServiceMaker

estore_manager = ServiceMaker(
    "estore-manager",
    "estwisted.manager.tap",
    "An Event Store compatible manager node: watchdog, gossip, client endpoint.",
    "estore-manager",
)
