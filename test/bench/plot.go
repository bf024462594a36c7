package main

import (
	"fmt"
	"html"
	"math"
	"slices"
	"strings"
)

// series is one line of the plot: p50 against W.
type series struct {
	label, color string
	dashed       bool
	dotted       bool         // the floors
	pts          [][2]float64 // W, ms
}

// plotStyle gives each scenario a colour shared with its counterpart on
// the other side; ours are solid, the reference dashed.
var plotStyle = map[string]struct {
	color  string
	dashed bool
}{
	"ours/bridge-nft":        {"#1f6fd1", false},
	"ref/bridge+portmap-nft": {"#1f6fd1", true},
	"ours/bridge-ipt":        {"#e07b00", false},
	"ref/bridge+portmap-ipt": {"#e07b00", true},
	"ours/macvlan":           {"#2a9d3c", false},
	"ref/macvlan":            {"#2a9d3c", true},
	"ref/bridge":             {"#888888", true},
}

const (
	panelW, panelH = 470, 330
	padL, padR     = 58, 14
	padT, padB     = 34, 40
)

// legendH is the height of the legend below the panels: a line of text
// and three entries per row.
func legendH(entries int) int { return 40 + (entries+2)/3*22 }

// plot draws ADD and DEL p50 against W at C=1 for ours and the
// reference, with the exec and kernel floors as horizontal lines, on a
// logarithmic latency axis. Hand-written SVG, no external tools.
func (r *Report) plot() string {
	var b strings.Builder
	ss := r.plotSeries("ADD")
	width, height := 2*panelW, panelH+legendH(len(ss))
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	r.panel(&b, 0, "ADD", ss)
	r.panel(&b, panelW, "DEL", r.plotSeries("DEL"))
	legend(&b, ss, panelH+8)
	b.WriteString("</svg>\n")
	return b.String()
}

func (r *Report) plotSeries(verb string) []series {
	var out []series
	for _, run := range r.Runs {
		st, ok := plotStyle[run.Scenario]
		if !ok || run.Status == "skipped" {
			continue
		}
		s := series{label: run.Scenario, color: st.color, dashed: st.dashed}
		for _, w := range r.levels(run.Scenario) {
			if v := r.p50(run.Scenario, w, 1, verb); usable(v) {
				s.pts = append(s.pts, [2]float64{float64(w), v})
			}
		}
		if len(s.pts) > 0 {
			out = append(out, s)
		}
	}
	floors := []struct{ sc, label, color string }{
		{floorExec, "exec floor (no-op plugin)", "#000000"},
		{"floor/kernel", "kernel floor (bare veth)", "#9b30d9"},
	}
	for _, f := range floors {
		if v := r.p50(f.sc, 0, 1, verb); usable(v) {
			out = append(out, series{label: f.label, color: f.color, dotted: true,
				pts: [][2]float64{{0, v}, {math.Inf(1), v}}})
		}
	}
	return out
}

// panel draws one verb's axes and lines with its left edge at x0.
func (r *Report) panel(b *strings.Builder, x0 float64, verb string, ss []series) {
	wmax, lo, hi := 100.0, math.Inf(1), 0.0
	for _, s := range ss {
		for _, p := range s.pts {
			if !math.IsInf(p[0], 1) {
				wmax = max(wmax, p[0])
			}
			lo, hi = min(lo, p[1]), max(hi, p[1])
		}
	}
	if hi == 0 {
		lo, hi = 1, 10
	}
	dlo, dhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if dhi <= dlo {
		dhi = dlo + 1
	}
	pw, ph := float64(panelW-padL-padR), float64(panelH-padT-padB)
	px := func(w float64) float64 { return x0 + padL + math.Min(w, wmax)/wmax*pw }
	py := func(v float64) float64 { return padT + (dhi-math.Log10(v))/(dhi-dlo)*ph }
	fmt.Fprintf(b, `<text x="%.0f" y="20" font-size="14" font-weight="bold">%s p50 (ms, log scale) vs live attachments W, C=1</text>`+"\n", x0+padL, verb)
	for d := dlo; d <= dhi; d++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, d)
			if v > math.Pow(10, dhi) {
				break
			}
			y := py(v)
			fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e4e4e4"/>`+"\n", px(0), y, px(wmax), y)
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end" fill="#444">%s</text>`+"\n", px(0)-4, y+4, trimNum(v))
		}
	}
	for _, w := range xTicks(wmax) {
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e4e4e4"/>`+"\n", px(w), py(math.Pow(10, dhi)), px(w), py(math.Pow(10, dlo)))
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#444">%d</text>`+"\n", px(w), float64(panelH-padB)+16, int(w))
	}
	fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">W</text>`+"\n", px(wmax/2), panelH-6)
	fmt.Fprintf(b, `<rect x="%.1f" y="%d" width="%.1f" height="%.1f" fill="none" stroke="#888"/>`+"\n", px(0), padT, pw, ph)
	for _, s := range ss {
		var pts []string
		for _, p := range s.pts {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(p[0]), py(p[1])))
		}
		dash := dashAttr(s)
		fmt.Fprintf(b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.Join(pts, " "), s.color, dash)
		for _, p := range s.pts {
			if !math.IsInf(p[0], 1) && len(s.pts) > 0 && !strings.Contains(s.label, "floor") {
				fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s W=%d: %s ms</title></circle>`+"\n",
					px(p[0]), py(p[1]), s.color, html.EscapeString(s.label), int(p[0]), fmtMS(p[1]))
			}
		}
	}
}

func legend(b *strings.Builder, ss []series, y0 int) {
	for i, s := range ss {
		x, y := 20+(i%3)*310, y0+24+(i/3)*22
		dash := dashAttr(s)
		fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`+"\n", x, y, x+30, y, s.color, dash)
		fmt.Fprintf(b, `<text x="%d" y="%d">%s</text>`+"\n", x+38, y+4, html.EscapeString(s.label))
	}
	fmt.Fprintf(b, `<text x="20" y="%d" fill="#444">solid: ours · dashed: reference plugins (same colour = same job) · dotted: floors · ADD left, DEL right</text>`+"\n", y0+8)
}

func dashAttr(s series) string {
	switch {
	case s.dotted:
		return ` stroke-dasharray="2 3"`
	case s.dashed:
		return ` stroke-dasharray="6 4"`
	}
	return ""
}

func xTicks(wmax float64) []float64 {
	step := 100.0
	if wmax > 500 {
		step = 300
	} else if wmax < 100 {
		step = 10
	}
	var t []float64
	for w := 0.0; w <= wmax+1e-9; w += step {
		t = append(t, w)
	}
	if !slices.Contains(t, wmax) {
		t = append(t, wmax)
	}
	return t
}

func trimNum(v float64) string {
	if v >= 1 {
		return fmt.Sprintf("%.0f", v)
	}
	return strings.TrimRight(fmt.Sprintf("%.3f", v), "0")
}
