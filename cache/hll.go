package cache

import (
	"math"
	"math/bits"
	"slices"
)

// hll is a HyperLogLog sketch of a set of 64-bit hashes, the in-memory
// counterpart of Redis's PFADD/PFCOUNT for MemoryTally.
//
// Precision 14 (m = 16384 registers) gives a standard error of
// 1.04/sqrt(m) = 0.81% in a dense sketch of 12 KiB, as Redis's does, so
// that the licence count reads alike with either store. p = 12 would be
// 1.6% in 3 KiB (licences are billed on the count: it should be within
// 1%), p = 16 0.4% in 48 KiB, too much with a key per domain and day.
//
// Most domains have few recipients, so a sketch starts sparse: the exact
// distinct hashes, sorted, counted exactly (a domain with 37 users reports
// 37, not an estimate). It turns dense, 16384 six-bit registers packed
// four to three bytes, when the hashes would take more memory than the
// registers (1536 hashes): from there its size is fixed whatever the
// cardinality. The registers a dense sketch gets from the hashes are the
// ones it would have had from the start, so the switch loses nothing.
//
// A hash's top 14 bits choose the register; the register keeps the
// largest rank seen, the position of the first 1 bit in the other 50
// bits (1 to 51, 51 when they are all 0). The count of a dense sketch is
// Ertl's improved raw estimator ("New cardinality estimation algorithms
// for HyperLogLog sketches", 2017), nearly unbiased from a few elements to
// far beyond 2^50 with no empirical bias tables and no switch between
// linear counting and the raw estimate (see hllEstimate).
//
// The zero value is an empty sparse sketch. A sketch is not safe for
// concurrent use.
type hll struct {
	sparse []uint64      // sorted, distinct; nil when dense
	dense  *hllRegisters // nil while sparse
}

const (
	hllP      = 14
	hllM      = 1 << hllP    // registers
	hllQ      = 64 - hllP    // bits of a hash left for the rank
	hllBytes  = hllM * 6 / 8 // dense size: 6 bits a register (ranks are at most 51)
	hllSparse = hllBytes / 8 // most hashes a sparse sketch holds: no more than dense
)

// hllRegisters are a dense sketch's registers, six bits each, four to a
// group of three bytes (little-endian: register 4g+j is bits 6j to 6j+5 of
// group g). Six bits hold every rank (at most 51) and take 12 KiB where a
// byte a register would take 16.
type hllRegisters [hllM / 4][3]uint8

func hllLoad(g *[3]uint8) uint32 { return uint32(g[0]) | uint32(g[1])<<8 | uint32(g[2])<<16 }

func hllStore(g *[3]uint8, w uint32) { g[0], g[1], g[2] = uint8(w), uint8(w>>8), uint8(w>>16) }

// get returns register r.
func (d *hllRegisters) get(r int) uint8 {
	return uint8(hllLoad(&d[r>>2]) >> (uint(r&3) * 6) & 63)
}

// hashMember is the hash of a member added to a sketch: FNV-1a 64 (as
// hash/fnv's New64a computes it, written out here so as not to allocate)
// followed by splitmix64's finaliser.
//
// FNV-1a alone is not good enough for HyperLogLog, which takes the
// register from the top bits and the rank from the next ones: a byte
// reaches those bits only through the multiplies after it (the last byte
// through one, mostly by carries), so members differing near their end
// ("user17@example.com", "user18@example.com") get correlated high bits.
// The finaliser spreads every bit of the state over every output bit, and
// being a bijection it adds no collisions.
//
// The hash is deterministic, not seeded (hash/maphash would be faster but
// has random seeds only): sketches never leave the process so a seed would
// buy nothing, while a fixed hash makes every count reproducible (the same
// members give the same estimate in every run and on every node, and
// tests of accuracy cannot fail by chance). Nobody choosing recipients can
// bend the count much either: members must be valid recipients to be
// counted.
func hashMember(s string) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= prime
	}
	return mix64(h)
}

// mix64 is splitmix64's output function (Stafford's "Mix13" variant of
// MurmurHash3's fmix64, as in Java's SplittableRandom): two
// xor-shift-multiply rounds with full avalanche.
func mix64(z uint64) uint64 {
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// hllPlace returns the register a hash goes to and its rank there.
func hllPlace(h uint64) (int, uint8) {
	// The sentinel bit below the rank bits caps the rank at hllQ+1.
	return int(h >> hllQ), uint8(bits.LeadingZeros64(h<<hllP|1<<(hllP-1))) + 1
}

// add adds one hash.
func (s *hll) add(h uint64) {
	one := [1]uint64{h}
	s.addSorted(one[:])
}

// addSorted adds hashes sorted in increasing order without repeats (hs
// is only read: it may be another sketch's).
func (s *hll) addSorted(hs []uint64) {
	if s.dense != nil {
		for _, h := range hs {
			s.set(h)
		}
		return
	}
	// Count the new hashes, a binary search each: mostly a few members
	// are added to a key of many.
	fresh := 0
	rest := s.sparse
	for _, h := range hs {
		i, found := slices.BinarySearch(rest, h)
		if !found {
			fresh++
		}
		rest = rest[i:]
	}
	if fresh == 0 {
		return
	}
	n := len(s.sparse) + fresh
	if n > hllSparse {
		s.toDense()
		for _, h := range hs {
			s.set(h)
		}
		return
	}
	if n > cap(s.sparse) {
		// Grow by doubling, but never past hllSparse: the capacity is
		// memory held, and the point of the sparse form is to hold less.
		grown := make([]uint64, len(s.sparse), min(max(n, 2*cap(s.sparse), 4), hllSparse))
		copy(grown, s.sparse)
		s.sparse = grown
	}
	// Merge in place from the back, the largest new hash first: with j
	// new hashes left to place, this one included, the old hashes above
	// it move up j places in one copy, and it goes just below them.
	end := len(s.sparse)
	s.sparse = s.sparse[:n]
	j := fresh
	for k := len(hs) - 1; k >= 0 && j > 0; k-- {
		p, found := slices.BinarySearch(s.sparse[:end], hs[k])
		if found {
			continue
		}
		copy(s.sparse[p+j:], s.sparse[p:end])
		s.sparse[p+j-1] = hs[k]
		j--
		end = p
	}
}

// set raises h's register to h's rank in a dense sketch.
func (s *hll) set(h uint64) {
	r, rank := hllPlace(h)
	g := &s.dense[r>>2]
	sh := uint(r&3) * 6
	w := hllLoad(g)
	if uint8(w>>sh&63) >= rank {
		return
	}
	hllStore(g, w&^(63<<sh)|uint32(rank)<<sh)
}

// toDense turns a sparse sketch dense.
func (s *hll) toDense() {
	if s.dense != nil {
		return
	}
	s.dense = new(hllRegisters)
	for _, h := range s.sparse {
		s.set(h)
	}
	s.sparse = nil
}

// merge makes s the union of s and o, leaving o as it is (and sharing
// no memory with it).
func (s *hll) merge(o *hll) {
	switch {
	case o.dense != nil:
		if s.dense == nil {
			sp := s.sparse
			s.dense = new(hllRegisters)
			*s.dense = *o.dense
			s.sparse = nil
			for _, h := range sp {
				s.set(h)
			}
			return
		}
		// Registers compare in place: the larger of two masked fields
		// is the field of the larger register.
		b := o.dense
		for g := range s.dense {
			x, y := hllLoad(&s.dense[g]), hllLoad(&b[g])
			hllStore(&s.dense[g], max(x&0x3f, y&0x3f)|max(x&0xfc0, y&0xfc0)|
				max(x&0x3f000, y&0x3f000)|max(x&0xfc0000, y&0xfc0000))
		}
	default:
		s.addSorted(o.sparse)
	}
}

// count returns the number of distinct hashes added: exact while sparse,
// estimated once dense.
func (s *hll) count() int64 {
	if s.dense == nil {
		return int64(len(s.sparse))
	}
	// The histogram of register values is all the estimator needs.
	var c [64]int
	for g := range s.dense {
		w := hllLoad(&s.dense[g])
		c[w&63]++
		c[w>>6&63]++
		c[w>>12&63]++
		c[w>>18&63]++
	}
	// Every register saturated estimates infinity (some 2^64 hashes,
	// which will not happen); int64 conversion of that is undefined.
	return int64(math.Round(min(hllEstimate(&c), 1<<62)))
}

// hllEstimate is Ertl's improved raw estimator from a histogram of the
// registers' values (c[k] registers hold k, for k up to hllQ+1):
//
//	n ≈ α∞ m² / (m σ(c[0]/m) + Σ_{k=1..q} c[k] 2^-k + m τ(1 - c[q+1]/m) 2^-q)
//
// with α∞ = 1/(2 ln 2). The classic estimator α m² / Σ 2^-reg is biased
// while many registers are 0 (hence its switch to linear counting) and
// when many are saturated; σ and τ correct the terms of the empty and of
// the saturated registers from the likelihood of their observed numbers.
func hllEstimate(c *[64]int) float64 {
	const m = float64(hllM)
	if c[0] == hllM {
		return 0
	}
	// The sum is computed from the highest rank down, halving each time
	// (Horner's scheme), which is exact with no powers of two to form.
	z := m * hllTau(1-float64(c[hllQ+1])/m)
	for k := hllQ; k >= 1; k-- {
		z = 0.5 * (z + float64(c[k]))
	}
	z += m * hllSigma(float64(c[0])/m)
	return m * m / (2 * math.Ln2 * z)
}

// hllSigma is σ(x) = x + Σ_{k≥1} x^(2^k) 2^(k-1), for 0 ≤ x < 1 (the
// share of registers still 0). Summed until the terms no longer change
// the sum.
func hllSigma(x float64) float64 {
	if x == 1 {
		return math.Inf(1)
	}
	y, z := 1.0, x
	for {
		x *= x
		next := z + x*y
		if next == z {
			return z
		}
		z = next
		y *= 2
	}
}

// hllTau is τ(x) = (1 - x - Σ_{k≥1} (1 - x^(2^-k))² 2^-k) / 3, for
// 0 ≤ x ≤ 1 (the share of registers not saturated). Summed until the
// terms no longer change the sum.
func hllTau(x float64) float64 {
	if x == 0 || x == 1 {
		return 0
	}
	y, z := 1.0, 1-x
	for {
		x = math.Sqrt(x)
		y *= 0.5
		next := z - (1-x)*(1-x)*y
		if next == z {
			return z / 3
		}
		z = next
	}
}

// hashMembers returns the distinct hashes of members, sorted, in buf if
// it has room.
func hashMembers(members []string, buf []uint64) []uint64 {
	hs := buf[:0]
	for _, m := range members {
		hs = append(hs, hashMember(m))
	}
	slices.Sort(hs)
	return slices.Compact(hs)
}
