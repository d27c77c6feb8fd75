"""The unguaranteed pool: GPUs nobody is guaranteed, usable by anyone's non-preemptible work.

A guarantee is a promise: whatever else runs, the owner can get its guaranteed GPUs by
reclaiming borrowed (preemptible) work. Non-preemptible work is never preempted, so a
non-preemptible job may go beyond its workspace's guarantee only onto GPUs that no
guarantee needs. Which GPUs those are is not fixed per node: guarantees are counts per
model, and a "*" guarantee may be met by any model. So the check is on counts:

  GPU classes that count against the same guarantees are grouped into *atoms* (usually one
  per model named in a quota, plus one for the rest). For each guarantee b, r_b is what
  its owner may still claim (guarantee less the owner's non-preemptible GPUs there); for
  each atom a, R_a is its GPUs not held by non-preemptible work. By Hall's theorem the
  claims can all be met at once exactly when, for every set T of atoms,

      slack(T) = sum of R_a over a in T  -  sum of r_b over guarantees with atoms within T

  is >= 0; in general the claims that cannot be met add up to D = max(0, -min slack).

A non-preemptible job that needs `excess` GPUs beyond its own guarantee, on atom a, fits
when D does not grow: every slack(T) with a in T stays >= min(0, min slack) after the
job is counted (slack(T) falls by `excess` where T holds all of the job's own guarantee's
atoms, else by all it takes). So pool use never takes what a guarantee needs, while GPUs
of an over-guaranteed model (a guarantee larger than the ready fleet) do not close the
pool of other models. Work within a workspace's own guarantee is not checked here.

Capacity is the healthy GPUs of the ready nodes: when nodes go away the pool shrinks
first, guarantees last. Fleets with more than MAX_ATOMS atoms (2**atoms sets to check)
get no pool: beyond its guarantee a job must be preemptible, as before.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

MAX_ATOMS = 12


class Pool:
    def __init__(
        self,
        capacity: Mapping[int, int],  # atom -> healthy GPUs in the ready fleet
        guarantees: Mapping[Hashable, tuple[int, int]],  # guarantee -> (GPUs, atom mask)
    ) -> None:
        self.atoms = len(capacity)
        self.open = self.atoms <= MAX_ATOMS
        self._cap = [capacity[a] for a in range(self.atoms)]
        self._guarantee = {b: g for b, (g, mask) in guarantees.items() if mask and g > 0}
        self._mask = {b: mask for b, (g, mask) in guarantees.items() if mask and g > 0}
        self._firm_atom = [0] * self.atoms  # non-preemptible GPUs per atom, everyone's
        self._firm: dict[Hashable, int] = {}  # non-preemptible GPUs per guarantee, the owner's
        self._slack: list[int] = []
        self._floor = 0
        self._dirty = True
        self._empty_slack: list[int] | None = None  # with no non-preemptible work at all

    def mask(self, b: Hashable | None) -> int:
        return self._mask.get(b, 0)

    def charge(self, atom: int, b: Hashable | None, gpus: int) -> None:
        """Count (or, negative, stop counting) non-preemptible GPUs of atom a, of an owner
        whose guarantee there is b (None: none)."""
        self._firm_atom[atom] += gpus
        if b is not None and b in self._mask:
            self._firm[b] = self._firm.get(b, 0) + gpus
        self._dirty = True

    # -- the check -------------------------------------------------------------------

    def fits(self, atom: int, b: Hashable | None, need: int, excess: int) -> bool:
        """Whether `need` more non-preemptible GPUs on `atom`, `excess` of them beyond the
        owner's guarantee b, keep every guarantee as reachable as it is now."""
        if excess <= 0:
            return True
        if not self.open:
            return False
        slack, floor = self._current()
        return self._room(slack, floor, atom, self.mask(b), need, excess) >= 0

    def fits_empty(self, atom: int, b: Hashable | None, need: int, excess: int) -> bool:
        """As `fits`, with no non-preemptible work running anywhere: false means never."""
        if excess <= 0:
            return True
        if not self.open:
            return False
        slack = self._empty()
        return self._room(slack, min(slack), atom, self.mask(b), need, excess) >= 0

    def unguaranteed(self, atom: int) -> int:
        """GPUs of the atom that non-preemptible work beyond guarantees may ever use."""
        if not self.open:
            return 0
        slack = self._empty()
        return max(0, min(self._cap[atom], self._room(slack, min(slack), atom, 0, 0, 0)))

    def free(self, atom: int) -> int:
        """Of those, how many are not taken by such work now."""
        if not self.open:
            return 0
        slack, floor = self._current()
        return max(0, min(self._cap[atom], self._room(slack, floor, atom, 0, 0, 0)))

    @staticmethod
    def _room(slack: list[int], floor: int, atom: int, own: int, need: int, excess: int) -> int:
        """The least slack left above the floor, over the sets holding the atom."""
        bit = 1 << atom
        least: int | None = None
        for t in range(len(slack)):
            if t & bit:
                took = excess if own and own & ~t == 0 else need
                left = slack[t] - took - floor
                if least is None or left < least:
                    least = left
        return 0 if least is None else least

    def _current(self) -> tuple[list[int], int]:
        if self._dirty:
            left = [c - f for c, f in zip(self._cap, self._firm_atom, strict=True)]
            claims = {b: max(0, g - self._firm.get(b, 0)) for b, g in self._guarantee.items()}
            self._slack = self._slacks(left, claims)
            self._floor = min(self._slack)
            self._dirty = False
        return self._slack, self._floor

    def _empty(self) -> list[int]:
        if self._empty_slack is None:
            self._empty_slack = self._slacks(list(self._cap), dict(self._guarantee))
        return self._empty_slack

    def _slacks(self, left: list[int], claims: Mapping[Hashable, int]) -> list[int]:
        n = 1 << self.atoms
        slack = [0] * n
        for t in range(1, n):
            low = t & -t  # the set is the lowest atom plus a smaller set, summed already
            slack[t] = slack[t ^ low] + left[low.bit_length() - 1]
        for b, r in claims.items():
            if r:
                mask = self._mask[b]
                for t in range(n):
                    if mask & ~t == 0:
                        slack[t] -= r
        return slack
