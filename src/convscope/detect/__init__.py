"""What a trained detection run does for a user: boxes on their images (``convscope detect``) and the detection
fields of ``eval.json`` (``convscope evaluate``)."""
