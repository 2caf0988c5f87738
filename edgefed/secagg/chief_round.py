"""The chief's side of one secure-aggregation round: relays keys and shares, sums masked updates,
and removes the masks once enough workers reveal their shares. It never sees one worker's update:
only masked vectors (uniformly random on their own) and, at the end, their sum.

Phases: adverts -> roster() -> shares -> inboxes() -> masked updates -> unmask_request() ->
unmask answers -> result(). A message that breaks the rules raises PeerFault (the caller drops that
worker, the round goes on); too few workers at any phase raises SecAggRefused (no model is adopted).
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Callable, Mapping

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ed25519

from edgefed.secagg import keys, ring, shamir
from edgefed.secagg.errors import PeerFault, SecAggRefused, effective_threshold
from edgefed.secagg.worker_round import holder_indices
from edgefed.wire.secagg_messages import (
    SecAggAdvert,
    SecAggInbox,
    SecAggRoster,
    SecAggShares,
    SecAggUnmask,
    SecAggUnmaskRequest,
    unb64,
)

MAX_RECONSTRUCTION_TRIES = 64  # subsets tried when a share is bad (a lying worker)


class ChiefRound:
    def __init__(self, round_number: int, length: int, min_threshold: int,
                 directory: Mapping[str, ed25519.Ed25519PublicKey]) -> None:
        self.round = round_number
        self.length = length
        self._min_threshold = min_threshold
        self._directory = dict(directory)
        self._adverts: dict[str, SecAggAdvert] = {}
        self.threshold = 0
        self._shares: dict[str, SecAggShares] = {}
        self._sharers: frozenset[str] = frozenset()
        self._sum = np.zeros(length, ring.RING_DTYPE)
        self.weights: dict[str, int] = {}  # survivors' sample counts, in arrival order
        self._survivors: frozenset[str] = frozenset()
        self._answers: dict[str, SecAggUnmask] = {}

    # who has done each phase (the chief waits for the rest until its deadline)
    @property
    def advertised(self) -> set[str]:
        return set(self._adverts)

    @property
    def shared(self) -> set[str]:
        return set(self._shares)

    @property
    def masked_by(self) -> set[str]:
        return set(self.weights)

    @property
    def answered(self) -> set[str]:
        return set(self._answers)

    def _refuse(self, why: str) -> SecAggRefused:
        return SecAggRefused(f"secure aggregation, round {self.round}: {why}; the round is not adopted")

    def _enough(self, count: int, phase: str) -> None:
        if count < self.threshold:
            raise self._refuse(f"{count} workers {phase}, below the threshold {self.threshold}: refusing to unmask")

    # -- keys -------------------------------------------------------------------------------------
    def add_advert(self, sender: str, advert: SecAggAdvert) -> None:
        if self.threshold:
            return  # too late for this round's roster: not a fault; the worker waits for the next round
        identity = self._directory.get(sender)
        if advert.name != sender or identity is None:
            raise PeerFault(sender, f"advert names {advert.name[:40]!r}")
        if sender in self._adverts:
            raise PeerFault(sender, "a second advert")
        if not keys.advert_is_signed(identity, self.round, sender, unb64(advert.c_public), unb64(advert.s_public),
                                     unb64(advert.signature)):
            raise PeerFault(sender, "advert signature does not verify")
        self._adverts[sender] = advert

    def roster(self) -> SecAggRoster:
        self.threshold = effective_threshold(self._min_threshold, len(self._adverts))
        self._enough(len(self._adverts), "advertised keys")
        return SecAggRoster(self.threshold, [advert.to_body() for advert in self._adverts.values()])

    # -- shares -----------------------------------------------------------------------------------
    def add_shares(self, sender: str, shares: SecAggShares) -> None:
        if self._sharers:
            return  # too late for this round's inboxes: not a fault; the worker waits for the next round
        if not self.threshold:
            raise PeerFault(sender, "shares before the roster")
        if sender not in self._adverts or sender in self._shares:
            raise PeerFault(sender, "shares from outside the roster, or twice")
        if set(shares.shares) != set(self._adverts) - {sender}:
            raise PeerFault(sender, "shares are not addressed to exactly the other roster members")
        self._shares[sender] = shares

    def inboxes(self) -> dict[str, SecAggInbox]:
        """Each sharer's inbox: the ciphertexts the other sharers addressed to it."""
        self._enough(len(self._shares), "sent shares")
        self._sharers = frozenset(self._shares)
        return {to: SecAggInbox({sender: self._shares[sender].shares[to] for sender in self._sharers if sender != to})
                for to in self._sharers}

    # -- masked updates ---------------------------------------------------------------------------
    def add_masked(self, sender: str, masked: np.ndarray, num_samples: int) -> None:
        """Fold one masked update into the ring sum; the vector is not kept."""
        if not self._sharers or self._survivors:
            raise PeerFault(sender, "masked update out of order")
        if sender not in self._sharers or sender in self.weights:
            raise PeerFault(sender, "masked update from a worker that did not share keys, or twice")
        if masked.dtype != ring.RING_DTYPE or masked.shape != (self.length,):
            raise PeerFault(sender, f"masked update is {masked.dtype}{masked.shape}, expected uint32({self.length},)")
        if not 1 <= num_samples <= ring.MAX_TOTAL_WEIGHT - sum(self.weights.values()):
            raise PeerFault(sender, f"{num_samples} samples do not fit the ring's range")
        np.add(self._sum, masked, out=self._sum)
        self.weights[sender] = num_samples

    def unmask_request(self) -> SecAggUnmaskRequest:
        self._enough(len(self.weights), "sent a masked update")
        self._survivors = frozenset(self.weights)
        return SecAggUnmaskRequest(sorted(self._survivors))

    def add_unmask(self, sender: str, answer: SecAggUnmask) -> None:
        if not self._survivors or sender not in self._survivors or sender in self._answers:
            raise PeerFault(sender, "unmask answer from a non-survivor, out of order or twice")
        dropped = self._sharers - self._survivors
        if not set(answer.seed_shares) <= self._survivors or not set(answer.key_shares) <= dropped:
            raise PeerFault(sender, "reveals a share the round did not ask for")
        self._answers[sender] = answer

    def ready(self) -> bool:
        return len(self._answers) >= self.threshold

    # -- the sum ----------------------------------------------------------------------------------
    def result(self) -> tuple[np.ndarray, int]:
        """The ring sum of the survivors' quantized (sample-weighted) updates, and their total samples."""
        self._enough(len(self._answers), "answered the unmask request")
        xs = holder_indices(list(self._adverts))
        total = self._sum
        for owner in sorted(self._survivors):
            seed = self._rebuild(owner, "seed_shares", xs, self._seed_check(owner))
            ring.add_mask(total, seed, -1)
        for gone in sorted(self._sharers - self._survivors):
            raw = self._rebuild(gone, "key_shares", xs, self._key_check(gone))
            secret = keys.private_from_bytes(raw)
            for owner in sorted(self._survivors):  # take out the mask each survivor shared with `gone`
                seed = keys.pair_seed(secret, unb64(self._adverts[owner].s_public), self.round, gone, owner)
                ring.add_mask(total, seed, -1 if owner < gone else +1)
        self._sum = np.zeros(0, ring.RING_DTYPE)
        return total, sum(self.weights.values())

    def _seed_check(self, owner: str) -> Callable[[bytes], bool]:
        commitment = self._shares[owner].commitment
        return lambda secret: hashlib.sha256(secret).hexdigest() == commitment

    def _key_check(self, owner: str) -> Callable[[bytes], bool]:
        public = unb64(self._adverts[owner].s_public)
        return lambda secret: keys.public_of(secret) == public

    def _rebuild(self, owner: str, kind: str, xs: Mapping[str, int], check: Callable[[bytes], bool]) -> bytes:
        """owner's secret from the survivors' shares: the first threshold of them, else other subsets,
        accepted only when check(secret) (its commitment or public key matches)."""
        points = {xs[holder]: unb64(getattr(answer, kind)[owner]) for holder, answer in sorted(self._answers.items())
                  if owner in getattr(answer, kind)}
        if len(points) < self.threshold:
            raise self._refuse(f"{len(points)} shares of {owner!r}, below the threshold {self.threshold}")
        ordered = sorted(points)
        chance = random.Random(self.round)
        candidates = itertools.chain([ordered[:self.threshold]],
                                     (chance.sample(ordered, self.threshold) for _ in range(MAX_RECONSTRUCTION_TRIES)))
        for subset in candidates:
            try:
                secret = shamir.reconstruct({x: points[x] for x in subset})
            except ValueError:
                continue
            if check(secret):
                return secret
        raise self._refuse(f"the shares of {owner!r} do not reconstruct its committed secret")
