from twisted.application.service import ServiceMaker

estore = ServiceMaker(
    "estore", "estwisted.tap", "An Event Store compatible event database node.", "estore"
)
