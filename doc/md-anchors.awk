# doc/md-anchors.awk: doxygen's input filter for the Markdown pages (see doc/Doxyfile.in).
# Doxygen 1.9 does not give headings the anchors GitHub gives them, so links such as
# [Concepts](#1-concepts) would not resolve. This appends GitHub's anchor to every heading
# outside fenced code blocks ("## 3. TLS" becomes "## 3. TLS {#sec-3-tls}"). Doxygen wants an
# anchor to start with a letter, so every anchor, and every "](#anchor)" link, gets "sec-".
/^[ \t]*(```|~~~)/ { fenced = !fenced }
!fenced && /^#+[ \t]/ && !/\{#[^}]*\}[ \t]*$/ {
  id = tolower($0)
  sub(/^#+[ \t]+/, "", id)
  sub(/[ \t#]+$/, "", id)
  gsub(/[^a-z0-9 _-]/, "", id)
  gsub(/ /, "-", id)
  if (seen[id]++) id = id "-" (seen[id] - 1)
  $0 = $0 " {#sec-" id "}"
}
!fenced { gsub(/\]\(#/, "](#sec-") }
{ print }
