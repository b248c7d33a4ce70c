"""Plainly written reference implementations, outside the library: the authors' code restated
(:mod:`reference.authors`) and OTI as written from the paper (:mod:`reference.oti`). The equivalence tests
and the benchmarks hold the library to them; nothing computes results with them."""
