"""Face recognition for the identify stage: aligned embeddings (`recognize`), the enrolled people's gallery
(`gallery`), and the facebank identifier with its per-track policy (`identify_facebank`)."""
