package secrets

import (
	"math/rand/v2"
	"regexp/syntax"
	"strings"
	"unicode"
)

// sampleGen generates strings that a regular expression matches, from its
// syntax tree, with choices biased towards what a real credential looks
// like: letters and digits for token classes, no optional padding, a
// quote or a space after the token.
type sampleGen struct {
	rng *rand.Rand
	sb  strings.Builder
}

func newSampleGen(seed uint64) *sampleGen {
	return &sampleGen{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// generate returns a string built from re (which may still fail
// assertions such as \b; callers check the result).
func (g *sampleGen) generate(re *syntax.Regexp) string {
	g.sb.Reset()
	g.walk(re)
	return g.sb.String()
}

func (g *sampleGen) walk(re *syntax.Regexp) {
	switch re.Op {
	case syntax.OpLiteral:
		g.sb.WriteString(string(re.Rune))
	case syntax.OpCharClass:
		g.sb.WriteRune(g.pick(re.Rune))
	case syntax.OpAnyChar, syntax.OpAnyCharNotNL:
		if g.rng.IntN(2) == 0 {
			g.sb.WriteByte(' ')
		} else {
			g.sb.WriteRune(g.pick([]rune{'0', '9', 'A', 'Z', 'a', 'z'}))
		}
	case syntax.OpCapture:
		g.walk(re.Sub[0])
	case syntax.OpConcat:
		for _, s := range re.Sub {
			g.walk(s)
		}
	case syntax.OpAlternate:
		var consuming []*syntax.Regexp
		for _, s := range re.Sub {
			if maxLen(s) != 0 {
				consuming = append(consuming, s)
			}
		}
		if len(consuming) == 0 {
			consuming = re.Sub
		}
		g.walk(consuming[g.rng.IntN(len(consuming))])
	case syntax.OpQuest:
		if g.rng.IntN(2) == 0 {
			g.walk(re.Sub[0])
		}
	case syntax.OpStar:
		g.repeat(re.Sub[0], 0, -1)
	case syntax.OpPlus:
		g.repeat(re.Sub[0], 1, -1)
	case syntax.OpRepeat:
		g.repeat(re.Sub[0], re.Min, re.Max)
	}
}

// repeat writes sub a number of times between lo and hi (-1: unbounded):
// mostly none of optional padding, a token-like length otherwise.
func (g *sampleGen) repeat(sub *syntax.Regexp, lo, hi int) {
	if hi < 0 {
		hi = lo + 24
	}
	if lo == 0 {
		hi = min(hi, 1)
		if g.rng.IntN(3) > 0 {
			hi = 0
		}
	}
	hi = min(hi, lo+24)
	n := lo + g.rng.IntN(hi-lo+1)
	for range n {
		g.walk(sub)
	}
}

// pick returns a rune of the class: a letter or digit if it has some,
// else printable ASCII, else a space, else anything in it.
func (g *sampleGen) pick(class []rune) rune {
	var pool [4][]rune
	for i := 0; i+1 < len(class); i += 2 {
		for r := class[i]; r <= class[i+1] && r < 0x80; r++ {
			switch {
			case unicode.IsLetter(r) || unicode.IsDigit(r):
				pool[0] = append(pool[0], r)
			case r > ' ' && r < 0x7f:
				pool[1] = append(pool[1], r)
			case r == ' ' || r == '\t':
				pool[2] = append(pool[2], r)
			default:
				pool[3] = append(pool[3], r)
			}
		}
	}
	for _, p := range pool {
		if len(p) > 0 {
			return p[g.rng.IntN(len(p))]
		}
	}
	if len(class) > 0 {
		return class[0]
	}
	return 'x'
}
