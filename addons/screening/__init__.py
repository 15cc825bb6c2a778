"""Answer screening: the rules file's answer rules applied to an answer's text, whole or as a stream passes
(patterns and their partial matches, running texts, whole values and documents, SSE streams)."""
