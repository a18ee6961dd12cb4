"""The ActivityPub edges: routes, the inbox pipeline and its handler registry, forwarding,
WebFinger/NodeInfo and the interocc context route. They use the domain modules and the
protocol core (``server/activitypub/``); nothing below imports them."""
