"""A run: its plan (which stages, which candidates), the typed context its stages share, the stages
themselves (ladder, lint and rewrite, QAT, compare) and the report assembled from it; also the
commands built from stages (inspect, fleet). May import frontend, quantize, train, report, core."""
