"""How often sign-in may be tried: per client address and, separately, per account e-mail (per process).

Every attempt is counted before its password is hashed (argon2 is the expensive part of a sign-in, and
counting before it also holds when many attempts arrive at once); a successful one is given back, so
only failures use the allowance up. The e-mail is the normalised one the
account lookup uses, so no spelling of an address has a limit of its own; the per-address limit holds
however many client addresses an attacker spreads the guesses over. The price, as with any per-account
limit: whoever keeps guessing at an e-mail keeps its owner waiting too (one attempt per 6 seconds).
"""

from __future__ import annotations

from convolens.server.ratelimit import RateLimiter


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
        wait = self.per_client.acquire(client)
        if wait:
            return wait
        return self.per_address.acquire(address)

    def succeeded(self, client: str, address: str) -> None:
        """The attempt admitted for this client and address signed in: it does not count."""
        self.per_client.refund(client)
        self.per_address.refund(address)
