"""A worker's side of one secure-aggregation round, as a state machine over typed messages.

    round = WorkerRound(name, number, identity_key, directory)
    send(round.advert());  roster = recv()
    send(round.share(roster));  inbox = recv()
    send_update(round.mask(inbox, ring.quantize(delta, bound, samples)));  request = recv()
    send(round.unmask(request))

Every step checks what the chief relayed: signatures of every advert against the identity keys the
worker already trusts, that it never reveals both shares of one peer, and the threshold.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from edgefed.secagg import keys, ring, shamir
from edgefed.secagg.errors import SecAggRefused, effective_threshold
from edgefed.wire.secagg_messages import (
    SecAggAdvert,
    SecAggInbox,
    SecAggRoster,
    SecAggShares,
    SecAggUnmask,
    SecAggUnmaskRequest,
    b64,
    unb64,
)


def holder_indices(names: list[str]) -> dict[str, int]:
    """Each roster member's Shamir x coordinate: 1 + its place in sorted order (both sides agree)."""
    return {name: index + 1 for index, name in enumerate(sorted(names))}


class WorkerRound:
    def __init__(self, name: str, round_number: int, identity: ed25519.Ed25519PrivateKey,
                 directory: Mapping[str, ed25519.Ed25519PublicKey], min_threshold: int = 2) -> None:
        self.name = name
        self.round = round_number
        self._identity = identity
        self._directory = dict(directory)  # every node's identity public key, known before the round
        self._min_threshold = min_threshold
        self._c = x25519.X25519PrivateKey.generate()
        self._s = x25519.X25519PrivateKey.generate()
        self._seed = secrets.token_bytes(shamir.SECRET_BYTES)  # the self mask's seed
        self._peers: dict[str, SecAggAdvert] = {}
        self._threshold = 0
        self._own_shares = b""
        self._inbox: dict[str, str] = {}
        self._masked_with: set[str] = set()
        self._unmasked = False

    def advert(self) -> SecAggAdvert:
        c_public, s_public = keys.public_bytes(self._c), keys.public_bytes(self._s)
        signature = keys.sign_advert(self._identity, self.round, self.name, c_public, s_public)
        return SecAggAdvert(self.name, b64(c_public), b64(s_public), b64(signature))

    def share(self, roster: SecAggRoster) -> SecAggShares:
        """Check every advert, then split the seed and the mask key among the roster."""
        if self._peers:
            raise SecAggRefused(f"round {self.round}: a second roster")
        adverts = {advert.name: advert for advert in roster.parsed()}
        own = adverts.get(self.name)
        if own is None or (own.c_public, own.s_public) != (self.advert().c_public, self.advert().s_public):
            raise SecAggRefused(f"round {self.round}: the roster does not carry this worker's own keys")
        for name, advert in adverts.items():
            identity = self._directory.get(name)
            if identity is None:
                raise SecAggRefused(f"round {self.round}: the roster names {name!r}, whose identity key is unknown")
            if not keys.advert_is_signed(identity, self.round, name, unb64(advert.c_public),
                                         unb64(advert.s_public), unb64(advert.signature)):
                raise SecAggRefused(f"round {self.round}: the keys of {name!r} are not signed by {name!r}")
        threshold = effective_threshold(self._min_threshold, len(adverts))
        if roster.threshold < threshold or roster.threshold > len(adverts):
            raise SecAggRefused(f"round {self.round}: threshold {roster.threshold} for {len(adverts)} workers "
                                f"(must be {threshold} to {len(adverts)})")
        self._peers, self._threshold = adverts, roster.threshold
        xs = holder_indices(list(adverts))
        seed_shares = shamir.split(self._seed, roster.threshold, list(xs.values()))
        key_shares = shamir.split(keys.private_bytes(self._s), roster.threshold, list(xs.values()))
        ciphertexts = {}
        for name, x in xs.items():
            plaintext = seed_shares[x] + key_shares[x]
            if name == self.name:
                self._own_shares = plaintext
                continue
            ciphertexts[name] = b64(keys.encrypt_share(self._c, unb64(adverts[name].c_public), self.round,
                                                       self.name, name, plaintext))
        return SecAggShares(hashlib.sha256(self._seed).hexdigest(), ciphertexts)

    def mask(self, inbox: SecAggInbox, quantized: np.ndarray) -> np.ndarray:
        """quantized plus the self mask and one pairwise mask per peer that shared its keys."""
        if not self._peers or self._masked_with:
            raise SecAggRefused(f"round {self.round}: masking out of order")
        senders = set(inbox.shares)
        strangers = senders - (set(self._peers) - {self.name})
        if strangers:
            raise SecAggRefused(f"round {self.round}: shares from outside the roster: {sorted(strangers)[:5]}")
        if len(senders) + 1 < self._threshold:
            raise SecAggRefused(f"round {self.round}: {len(senders) + 1} workers shared keys, "
                                f"below the threshold {self._threshold}")
        self._inbox = dict(inbox.shares)
        self._masked_with = senders | {self.name}
        masked = np.array(quantized, dtype=ring.RING_DTYPE, copy=True).reshape(-1)
        ring.add_mask(masked, self._seed, +1)
        for peer in sorted(senders):
            seed = keys.pair_seed(self._s, unb64(self._peers[peer].s_public), self.round, self.name, peer)
            ring.add_mask(masked, seed, +1 if self.name < peer else -1)
        return masked

    def unmask(self, request: SecAggUnmaskRequest) -> SecAggUnmask:
        """Seed shares of the survivors, mask-key shares of the dropped; answered once per round."""
        if not self._masked_with or self._unmasked:
            raise SecAggRefused(f"round {self.round}: unmask request out of order")
        survivors = set(request.survivors)
        if self.name not in survivors or not survivors <= self._masked_with:
            raise SecAggRefused(f"round {self.round}: the survivors are not a part of this round's workers")
        if len(survivors) < self._threshold:
            raise SecAggRefused(f"round {self.round}: {len(survivors)} survivors, below the threshold "
                                f"{self._threshold}: refusing to unmask")
        self._unmasked = True
        seed_shares, key_shares = {}, {}
        for peer in sorted(self._masked_with):
            plaintext = self._own_shares if peer == self.name else keys.decrypt_share(
                self._c, unb64(self._peers[peer].c_public), self.round, peer, self.name, unb64(self._inbox[peer]))
            if plaintext is None or len(plaintext) != 2 * shamir.SHARE_BYTES:
                continue  # a share its sender garbled: the chief rebuilds from the others
            if peer in survivors:
                seed_shares[peer] = b64(plaintext[:shamir.SHARE_BYTES])
            else:
                key_shares[peer] = b64(plaintext[shamir.SHARE_BYTES:])
        return SecAggUnmask(seed_shares, key_shares)
