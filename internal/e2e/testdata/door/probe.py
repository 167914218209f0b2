"""Run inside a sandboxed build with a door: what answers?

Arguments: the index URL, a URL of the API beside it, a Redis host:port,
a host service's host:port. Prints one "name result" line per probe.
"""
import http.client
import socket
import sys
import urllib.error
import urllib.request

DOOR = ("127.0.0.1", 3128)
index, api, redis, host = sys.argv[1:5]


def via_door(url):
    proxy = "http://%s:%d" % DOOR
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy, "https": proxy}))
    try:
        with opener.open(url, timeout=30) as r:
            return str(r.status)
    except urllib.error.HTTPError as e:
        return str(e.code)
    except Exception as e:
        return type(e).__name__


def tunnel(hostport):
    h, p = hostport.rsplit(":", 1)
    c = http.client.HTTPConnection(*DOOR, timeout=30)
    c.set_tunnel(h, int(p))
    try:
        c.connect()
        return "open"
    except OSError as e:
        return "403" if "403" in str(e) else type(e).__name__


def direct(hostport):
    h, p = hostport.rsplit(":", 1)
    try:
        socket.create_connection((h, int(p)), timeout=10).close()
        return "open"
    except OSError as e:
        return type(e).__name__


api_hostport = api.split("/")[2]
for name, result in [
    ("index", via_door(index)),
    ("api", via_door(api)),
    ("dot-segments", via_door(index + "../../../api/v1/sources")),
    ("redis", via_door("http://%s/" % redis)),
    ("redis-tunnel", tunnel(redis)),
    ("host-service", via_door("http://%s/" % host)),
    ("other-host", via_door("http://192.0.2.1/simple/")),
    ("other-host-tunnel", tunnel("192.0.2.1:443")),
    ("direct-redis", direct(redis)),
    ("direct-host-service", direct(host)),
    ("direct-api", direct(api_hostport)),
    ("direct-other-host", direct("192.0.2.1:80")),
]:
    print(name, result)
