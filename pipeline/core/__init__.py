"""What every room of the pipeline shares: the resolved configuration, datasets and preprocessing,
the candidate records, artifacts written atomically, the environment a report records.
May import only targets and edgecore."""
