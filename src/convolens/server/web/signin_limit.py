"""How often sign-in may be tried: per client address and, separately, per account e-mail (per process).

Every attempt is counted before its password is hashed (argon2 is the expensive part of a sign-in, and
counting before it also holds when many attempts arrive at once); a successful one is given back, so
only failures use the allowance up. The e-mail is the normalised one the
account lookup uses, so no spelling of an address has a limit of its own; the per-address limit holds
however many client addresses an attacker spreads the guesses over. The price, as with any per-account
limit: whoever keeps guessing at an e-mail keeps its owner waiting too (one attempt per 6 seconds).
"""

from __future__ import annotations

import ipaddress

from convolens.server.ratelimit import RateLimiter


def client_key(host: str) -> str:
    """The client the per-client limit counts: an IPv4 address, or an IPv6 address's /64 (one host usually
    holds a whole /64, and could otherwise take a fresh address for every few guesses)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class SignInLimit:
    def __init__(
        self,
        per_client: RateLimiter | None = None,
        per_address: RateLimiter | None = None,
    ) -> None:
        # A client (which may be an office behind one NAT address): 30 attempts, then one every 2 seconds.
        self.per_client = per_client or RateLimiter(per_second=1 / 2, burst=30)
        # One e-mail, from anywhere: 10 attempts, then one every 6 seconds.
        self.per_address = per_address or RateLimiter(per_second=1 / 6, burst=10)

    def admit(self, client: str, address: str) -> float:
        """0 if this attempt may go ahead (and it is counted), else the seconds to wait. A client over
        its limit spends none of the address's attempts."""
        wait = self.per_client.acquire(client_key(client))
        if wait:
            return wait
        return self.per_address.acquire(address)

    def succeeded(self, client: str, address: str) -> None:
        """The attempt admitted for this client and address signed in: it does not count."""
        self.per_client.refund(client_key(client))
        self.per_address.refund(address)
