package fleet

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// Line is one series of a panel.
type Line struct {
	Name   string
	Color  string
	Points [][2]float64 // x, y
}

// Panel is one chart: lines over a shared x axis, y from 0.
type Panel struct {
	Title, XLabel, YLabel string
	Lines                 []Line
}

// Panel geometry, in SVG user units.
const (
	panelW, panelH = 300, 220
	marginL        = 50
	marginT        = 30
	plotW, plotH   = 230, 150
)

// WriteSVG draws the panels side by side, with a caption under them.
func WriteSVG(w io.Writer, caption string, panels []Panel) error {
	var b strings.Builder
	width, height := panelW*len(panels), panelH+30
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	for i, p := range panels {
		p.draw(&b, float64(i*panelW))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" fill="#444">%s</text>`+"\n", width/2, height-8, escape(caption))
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func (p Panel) draw(b *strings.Builder, x0 float64) {
	var xmax, ymax float64
	for _, l := range p.Lines {
		for _, pt := range l.Points {
			xmax, ymax = math.Max(xmax, pt[0]), math.Max(ymax, pt[1])
		}
	}
	xmax, ymax = niceCeil(xmax), niceCeil(ymax)
	left, top := x0+marginL, float64(marginT)
	px := func(x float64) float64 { return left + x/xmax*plotW }
	py := func(y float64) float64 { return top + plotH - y/ymax*plotH }
	fmt.Fprintf(b, `<text x="%.1f" y="16" text-anchor="middle" font-weight="bold">%s</text>`+"\n", left+plotW/2, escape(p.Title))
	for i := 0; i <= 4; i++ { // grid and axis labels
		y, x := ymax*float64(i)/4, xmax*float64(i)/4
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, py(y), left+plotW, py(y))
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-4, py(y)+4, label(y))
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", px(x), top+plotH+14, label(x))
	}
	fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%d" height="%d" fill="none" stroke="#888"/>`+"\n", left, top, plotW, plotH)
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", left+plotW/2, top+plotH+28, escape(p.XLabel))
	fmt.Fprintf(b, `<text transform="translate(%.1f %.1f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", x0+12, top+plotH/2, escape(p.YLabel))
	for i, l := range p.Lines {
		pts := make([]string, len(l.Points))
		for j, pt := range l.Points {
			pts[j] = fmt.Sprintf("%.1f,%.1f", px(pt[0]), py(pt[1]))
			fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"/>`+"\n", px(pt[0]), py(pt[1]), l.Color)
		}
		fmt.Fprintf(b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="1.5"/>`+"\n", strings.Join(pts, " "), l.Color)
		ly := top + 12 + float64(i)*14
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>`+"\n", left+8, ly-4, left+22, ly-4, l.Color)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f">%s</text>`+"\n", left+26, ly, escape(l.Name))
	}
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (1 for v <= 0), so the four grid steps
// are round numbers.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 4, 5, 10} {
		if v <= m*p*(1+1e-9) {
			return m * p
		}
	}
	return 10 * p
}

func label(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".")
}

func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}
