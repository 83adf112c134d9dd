"""Multilingual text the tiny parity checkpoint's sentencepiece model is trained on (written here, so
the asset can be rebuilt with nothing downloaded)."""

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France, and Berlin is the capital of Germany.",
    "Le renard brun rapide saute par-dessus le chien paresseux.",
    "Paris est la capitale de la France.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Berlin ist die Hauptstadt von Deutschland.",
    "El rápido zorro marrón salta sobre el perro perezoso.",
    "Madrid es la capital de España.",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "Москва — столица России.",
    "Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλικο σκύλο.",
    "الثعلب البني السريع يقفز فوق الكلب الكسول.",
    "तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है।",
    "敏捷的棕色狐狸跳过了懒狗。北京是中国的首都。",
    "素早い茶色の狐がのろまな犬を飛び越える。東京は日本の首都です。",
    "빠른 갈색 여우가 게으른 개를 뛰어넘는다. 서울은 한국의 수도이다.",
    "Numbers like 2024, 3.14 and 1,000,000 appear in text too.",
    "Machine translation helps people read news in many languages.",
    "La traduction automatique aide les gens à lire les nouvelles.",
    "Maschinelle Übersetzung hilft Menschen, Nachrichten zu lesen.",
]
