from twisted.application.service import ServiceMaker

estore = ServiceMaker(
    "estore", "estwisted.node.tap", "An Event Store compatible event database node.", "estore"
)
